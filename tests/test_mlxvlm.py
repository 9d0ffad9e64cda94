"""mlx-vlm's side of the conformance check, without mlx: the adapter from mlx-vlm's module paths to tap stages
(qvlearn.tools.mlxvlm), the runner's taps on a module tree, and the verdict check of ``make conformance-quick``.

Each adapter test writes what the runner would for one encode, by mlx-vlm's module paths, from qvlearn's own trace of
a tiny tower, and checks that the adapter gives back every stage of that trace that mlx-vlm has.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

import qvlearn
from qvlearn.errors import TapError
from qvlearn.preprocessing import patchify
from qvlearn.tools.mlxvlm import MLXVLM_STAGES, applies, taps_from_mlxvlm
from qvlearn.tools.taps import compare_taps, stage_names

ROOT = Path(__file__).resolve().parents[1]
TOWERS = {"qwen2_vl": "tiny-qwen2-vl", "qwen2_5_vl": "tiny-qwen2.5-vl", "qwen3_vl": "tiny-qwen3-vl",
          "qwen3_5": "tiny-qwen3.5"}


def _tool(name: str):
    """tools/conformance/<name>.py as a module (they import each other by plain name, as when run)."""
    folder = str(ROOT / "tools" / "conformance")
    if folder not in sys.path:
        sys.path.insert(0, folder)
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / "conformance" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _encode(checkpoint, family, height=112, width=168):
    encoder = qvlearn.load_encoder(checkpoint(TOWERS[family], dtype="float32"))
    patch = 16 if family.startswith("qwen3") else 14
    image = np.random.default_rng(0).standard_normal((3, height * patch // 14, width * patch // 14)).astype(
        np.float32)
    pixel_values, grid = patchify(np.broadcast_to(image, (2, *image.shape)), patch)
    return encoder, pixel_values, grid, encoder.trace(pixel_values, [grid], to_numpy=True, stages=["*"])


def _runner_arrays(trace, family, depth):
    """What mlxvlm_runner.py writes for this encode: the trace's stages under mlx-vlm's module paths."""
    arrays = {}
    for path, stage, families, _ in MLXVLM_STAGES:
        if not applies(families, family) or path.startswith("processor."):
            continue
        for i in range(depth) if "{i}" in path else range(4) if "{j}" in path else [None]:
            s = stage.format(i=i, j=i) if i is not None else stage
            if s in trace:
                arrays[path.format(i=i, j=i) if i is not None else path] = trace[s]
    return arrays


@pytest.mark.parametrize("family", sorted(TOWERS))
def test_every_stage_mlx_vlm_has_comes_back(checkpoint, family):
    encoder, pv, grid, trace = _encode(checkpoint, family)
    arrays = _runner_arrays(trace, family, encoder.config.depth)
    stages = taps_from_mlxvlm(arrays, family, pixel_values=pv, grid_thw=[grid])
    rows = compare_taps(stages, trace, rtol=1e-12, scale_tol=1e-12)  # the same numbers, moved
    assert [r.name for r in rows if not r.ok] == []
    # not in mlx-vlm's module tree as outputs: positions and RoPE tables, the attention's insides, the first residual
    inside = {"position_ids", "cos", "sin", "cu_seqlens", "cu_window_seqlens"}
    for i in range(encoder.config.depth):
        inside |= {f"blocks.{i}.attn.q", f"blocks.{i}.attn.k", f"blocks.{i}.residual1"}
        if family == "qwen2_5_vl":
            inside.add(f"blocks.{i}.mlp.act")  # silu(gate) * up is inline in mlx-vlm's MLP
    assert set(stage_names(encoder.config)) - set(stages) <= inside
    assert "embeddings" in stages and "blocks.0.norm1" in stages


def test_window_order_blocks_get_their_natural_order(checkpoint):
    encoder, pv, grid, trace = _encode(checkpoint, "qwen2_5_vl", 224, 224)  # several windows: the orders differ
    stages = taps_from_mlxvlm(_runner_arrays(trace, "qwen2_5_vl", encoder.config.depth), "qwen2_5_vl",
                              pixel_values=pv, grid_thw=[grid])
    np.testing.assert_array_equal(stages["blocks.0.natural"], trace["blocks.0.natural"])
    assert not np.array_equal(stages["blocks.0"], stages["blocks.0.natural"])


def test_preprocessing_takes_the_processors_inputs(checkpoint):
    encoder, pv, grid, trace = _encode(checkpoint, "qwen2_vl")
    arrays = _runner_arrays(trace, "qwen2_vl", encoder.config.depth)
    with pytest.raises(TapError, match="no preprocessing"):
        taps_from_mlxvlm(arrays, "qwen2_vl", preprocessing=True)
    arrays["processor.pixel_values"], arrays["processor.grid_thw"] = pv + 1, np.asarray([grid])
    stages = taps_from_mlxvlm(arrays, "qwen2_vl", pixel_values=pv, grid_thw=[grid], preprocessing=True)
    np.testing.assert_array_equal(stages["pixel_values"], pv + 1)


def test_other_families_and_empty_outputs_are_refused(checkpoint):
    with pytest.raises(TapError, match="qwen2_5_omni"):
        taps_from_mlxvlm({"embeddings": np.zeros((1, 2)), "blocks.0": np.zeros((4, 2))}, "qwen2_5_omni")
    with pytest.raises(TapError, match="embeddings"):
        taps_from_mlxvlm({"blocks.0": np.zeros((4, 2))}, "qwen2_vl")


class _Module:
    """A stand-in for an mlx nn.Module: attributes, a list of blocks, and a call."""

    def __init__(self, fn, **children):
        self.fn = fn
        for k, v in children.items():
            setattr(self, k, v)

    def __call__(self, x):
        return self.fn(self, x)


def test_the_runner_taps_nested_modules_without_changing_them():
    runner = _tool("mlxvlm_runner")
    norm = _Module(lambda self, x: x * 2)
    block = _Module(lambda self, x: self.norm1(x) + 1, norm1=norm)
    model = _Module(lambda self, x: [x := b(x) for b in self.blocks][-1], blocks=[block, _Module(lambda s, x: x - 3)])
    store = {}
    done = runner.install_taps(model, ["blocks.{i}", "blocks.{i}.norm1", "merger"], store)
    assert sorted(done) == ["blocks.0", "blocks.0.norm1", "blocks.1"]  # block 1 has no norm1, there is no merger
    assert model(np.float32(5)) == 8  # (5 * 2 + 1) - 3: the same forward
    assert {k: float(v) for k, v in store.items()} == {"blocks.0.norm1": 10.0, "blocks.0": 11.0, "blocks.1": 8.0}


def _case(first, exit_code=1, edge=None, image="multiple"):
    return {"runtime": "mlx-vlm", "variant": "upstream", "tower": "tiny-qwen2-vl", "image": image,
            "arithmetic": {"exit": exit_code, "first": first, "edge": edge, "rows": [["x", 0, 0, 1, True, 0.1]]}}


def test_the_quick_check_compares_verdicts_off_the_noise_edge():
    conformance = _tool("conformance")
    committed = {"mlx_vlm": {"cases": [_case(None, 0), _case("pos_embeds", image="tie"),
                                       _case("blocks.0.mlp", image="small", edge="blocks.0.mlp at 1.20")]}}
    same = {"mlx_vlm": {"cases": [_case(None, 0), _case("pos_embeds", image="tie"), _case(None, 0, image="small")]}}
    assert conformance.check_verdicts(same, committed) == (2, 1, [])  # the edge verdict may flip: not compared
    other = {"mlx_vlm": {"cases": [_case("blocks.0.attn"), _case("pos_embeds", image="tie")]}}
    agree, edge, differ = conformance.check_verdicts(other, committed)
    assert (agree, edge) == (1, 0) and len(differ) == 1 and "blocks.0.attn" in differ[0]
    new = {"mlx_vlm": {"cases": [_case(None, 0, image="phone")]}}
    assert "not in the committed results" in conformance.check_verdicts(new, committed)[2][0]
    lean = conformance.lean(committed)
    assert "rows" not in lean["mlx_vlm"]["cases"][0]["arithmetic"] and lean["mlx_vlm"]["cases"][0]["image"]


def test_a_stage_at_its_limit_is_at_the_edge():
    from qvlearn.tools.taps import compare_taps

    conformance = _tool("conformance")
    rng = np.random.default_rng(0)
    ref = {"embeddings": rng.standard_normal((16, 8)).astype(np.float32)}
    base = {"embeddings": ref["embeddings"] * np.float32(1 + 1e-9)}
    for scale, edge in ((1e-8, False), (1e-7, True), (1e-5, False)):  # well within, at the limit, far beyond
        port = {"embeddings": (ref["embeddings"].astype(np.float64) * (1 + scale)).astype(np.float32)}
        verdict = conformance.judge(port, ref, base)
        assert bool(verdict["edge"]) == edge, (scale, verdict)
        if not edge:  # at the limit either verdict is float32's to decide: that is what the edge says
            assert (verdict["first"] is None) == (scale < 1e-7)
    assert compare_taps(ref, ref)[0].ok
