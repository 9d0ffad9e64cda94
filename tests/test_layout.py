"""The package's layout holds: nothing patches, the model never imports the tools, the engine equals the spec at
every stage, the strict stand-in runs the path CuPy runs, and a new family is one entry of the family table."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import qvlearn
from qvlearn import families, spec
from qvlearn.engine.kernels import KERNELS, Kernels
from qvlearn.stages import INTEGER_STAGES, stage_order

PACKAGE = Path(qvlearn.__file__).parent
MODULES = sorted(PACKAGE.rglob("*.py"))
ENTRY_POINTS = {"__main__.py", "bench.py"}  # python -m qvlearn, python -m qvlearn.bench: they run a tool


def _qvlearn_imports(tree, path):
    """Names bound to qvlearn modules in this file, and every qvlearn module it imports (dotted, absolute)."""
    package = ".".join(("qvlearn", *path.relative_to(PACKAGE).parent.parts))
    bound, modules = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("qvlearn"):
                modules.add(base)
                for alias in node.names:
                    modules.add(f"{base}.{alias.name}")
                    bound.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("qvlearn"):
                    modules.add(alias.name)
                    bound.add((alias.asname or alias.name).split(".")[0])
    return bound, modules


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_patches_another(path):
    """No qvlearn module assigns an attribute of another module, calls setattr, or uses unittest.mock: tools swap
    kernel-table entries or preprocessing steps instead (qvlearn.engine.kernels)."""
    tree = ast.parse(path.read_text())
    bound, modules = _qvlearn_imports(tree, path)
    assert not any(m.startswith("unittest") for m in modules)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
            assert not any("mock" in n for n in names), f"{path}: imports mock"
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("setattr", "delattr"):
            raise AssertionError(f"{path}:{node.lineno}: {node.func.id}()")
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, (ast.AugAssign, ast.AnnAssign)) else []
        for target in targets:
            root = target
            while isinstance(root, ast.Attribute):
                root = root.value
            if isinstance(target, ast.Attribute) and isinstance(root, ast.Name) and root.id in bound | {"qvlearn"}:
                raise AssertionError(f"{path}:{node.lineno}: assigns {ast.unparse(target)}, an attribute of a module")


def test_the_scan_catches_a_patch(tmp_path):
    """The scan above fails on a module that patches another (so it can catch what it is about)."""
    bad = PACKAGE / "tools" / "_scan_probe.py"
    bad.write_text("from ..engine import block\nfrom .. import encoder as e\ne.STAGES = ()\n")
    try:
        with pytest.raises(AssertionError, match="assigns e.STAGES"):
            test_no_module_patches_another(bad)
        bad.write_text("import qvlearn.encoder\nsetattr(qvlearn.encoder, 'STAGES', ())\n")
        with pytest.raises(AssertionError, match="setattr"):
            test_no_module_patches_another(bad)
    finally:
        bad.unlink()


@pytest.mark.parametrize("path", [p for p in MODULES if "tools" not in p.parts and p.name not in ENTRY_POINTS],
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_the_model_never_imports_the_tools(path):
    _, modules = _qvlearn_imports(ast.parse(path.read_text()), path)
    assert not any(m.startswith("qvlearn.tools") for m in modules), (path, sorted(modules))


def test_the_kernel_table_names_its_entries():
    with pytest.raises(qvlearn.ConfigError, match="no kernel named 'rotation'"):
        KERNELS.replace(rotation=None)
    assert isinstance(KERNELS.replace(rotate=KERNELS.rotate), Kernels)
    with pytest.raises(qvlearn.ConfigError, match="Kernels table"):
        qvlearn.VisionEncoder(qvlearn.preset_config("tiny-qwen2-vl"), {}, kernels={"rotate": None})


# --- the engine equals the spec, stage by stage ------------------------------------------------------------
def _close(ours, theirs, name, tol=1e-5):
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape, (name, ours.shape, theirs.shape)
    err = np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30)
    assert err <= tol, f"{name}: relative error {err:.2e} > {tol}"


def _engine_equals_spec_at_every_stage(config, weights, pixel_values, grid):
    """The engine's trace of every stage against qvlearn.spec's taps of the same forward: the same stage names, each
    within 1e-5 (the index stages identical); the first stage that departs is named."""
    encoder = qvlearn.VisionEncoder(config, weights)
    stages = encoder.trace(pixel_values, grid, to_numpy=True, stages=["*"])
    taps = {}
    spec.forward(config, weights, pixel_values, grid, tap=lambda name, array: taps.__setitem__(name, array))
    assert sorted(taps, key=stage_order) == sorted(stages, key=stage_order)
    for name in sorted(stages, key=stage_order):
        if name in INTEGER_STAGES:
            np.testing.assert_array_equal(stages[name], taps[name], err_msg=name)
        else:
            _close(stages[name], taps[name], name)
    return stages


@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-qwen3.5"])
def test_engine_equals_spec_at_every_stage(preset, mixed_batch_for):
    config = qvlearn.preset_config(preset)
    weights = qvlearn.weights.random_weights(config, seed=3)
    _engine_equals_spec_at_every_stage(config, weights, *mixed_batch_for(config))


@pytest.mark.parametrize("preset, overrides", [("qwen2.5-vl-7b", dict(depth=2, fullatt_block_indexes=[1])),
                                               ("qwen3-vl-8b", dict(depth=2, deepstack_visual_indexes=[0]))])
def test_engine_equals_spec_at_every_stage_full_width(preset, overrides):
    """A released width (1280 / 1152, 16 heads), cut in depth, on one odd-sized image."""
    config = qvlearn.preset_config(preset, **overrides)
    weights = qvlearn.weights.random_weights(config, seed=4)
    image = np.random.default_rng(5).integers(0, 256, (150, 230, 3), dtype=np.uint8)
    _engine_equals_spec_at_every_stage(config, weights, *qvlearn.preprocess(images=[image], family=config.family))


def test_the_strict_stand_in_runs_the_projection_cupy_runs():
    """Every backend but NumPy takes project_by_halves (CuPy included): the strict stand-in runs it on CPU, so no
    projection code runs only on a GPU."""
    from qvlearn.engine import block

    seen = []
    kernels = KERNELS.replace(rotate=lambda x, c, s: seen.append("halves") or KERNELS.rotate(x, c, s))
    config = qvlearn.preset_config("tiny-qwen2.5-vl")
    weights = qvlearn.weights.random_weights(config)
    rng = np.random.default_rng(0)
    grid = np.array([[1, 8, 12]])
    pv = rng.standard_normal((96, config.patch_dim)).astype(np.float32)
    strict = qvlearn.VisionEncoder(config, weights, backend="strict", kernels=kernels)
    out = strict.backend.to_numpy(strict(pv, grid))
    assert seen.count("halves") == 2 * config.depth  # q and k of every block, by halves
    seen.clear()
    numpy = qvlearn.VisionEncoder(config, weights, kernels=kernels)
    _close(numpy(pv, grid), out, "numpy (a replaced rotate: by halves) vs strict (halves)", tol=1e-6)
    assert seen.count("halves") == 2 * config.depth  # a replaced rotate runs on NumPy too
    _close(qvlearn.VisionEncoder(config, weights)(pv, grid), out, "numpy (complex, in place) vs strict", tol=1e-6)
    import types

    cupy = types.ModuleType("cupy")  # stands for the namespace array_namespace reports for CuPy arrays
    assert block.projection_step(cupy) is block.projection_step(strict.backend.xp) is block.project_by_halves
    assert block.projection_step(np) is block.project_in_place
    assert block.projection_step(np, kernels) is block.project_by_halves


# --- a family is one entry -----------------------------------------------------------------------------------
QWEN4_EXP = dataclasses.replace(
    families.FAMILIES["qwen3_5"], name="qwen4_exp", title="Qwen4-Exp", model_types=("qwen4_exp", "qwen4_exp_vision"),
    vision_model_type="qwen4_exp_vision", architectures={"qwen4_exp": "Qwen4ExpForConditionalGeneration"},
    reference=("qwen4_exp", "Qwen4ExpVisionConfig", "Qwen4ExpVisionModel"))
"""Qwen4-Exp's tower (transformers' Qwen4ExpVisionModel, Qwen3.5-MoE's unchanged) as one entry of the table: Qwen3.5's
with other names."""


def test_the_shipped_qwen4_exp_is_that_one_entry():
    assert families.FAMILIES["qwen4_exp"] == QWEN4_EXP


def test_a_new_family_is_one_entry(monkeypatch, tmp_path, mixed_batch_qwen3):
    """Take Qwen4-Exp out of the table, put the one entry back: it loads, traces and matches transformers."""
    from qvlearn.tools.reference import reference_tower, reference_trace

    monkeypatch.delitem(families.FAMILIES, "qwen4_exp")
    with pytest.raises(qvlearn.ConfigError, match="not a"):
        qvlearn.config.vision_config_from_dict(dict(model_type="qwen4_exp", vision_config={}))
    monkeypatch.setitem(families.FAMILIES, "qwen4_exp", QWEN4_EXP)
    tiny = qvlearn.config.PRESETS["tiny-qwen3.5"]
    config_json = dict(model_type="qwen4_exp", architectures=["Qwen4ExpForConditionalGeneration"],
                       vision_config=dict(tiny["vision_config"], model_type="qwen4_exp_vision"),
                       **QWEN4_EXP.token_ids)
    config = qvlearn.config.vision_config_from_dict(config_json)
    assert config.family == "qwen4_exp" and config.kind is QWEN4_EXP
    weights = qvlearn.weights.random_weights(config, seed=6)
    path = qvlearn.weights.save_checkpoint(tmp_path / "qwen4-exp", config_json, weights, dtype="float32")
    assert json.loads((path / "config.json").read_text())["model_type"] == "qwen4_exp"
    encoder = qvlearn.load_encoder(path)
    stages = _engine_equals_spec_at_every_stage(encoder.config, qvlearn.load_weights(path, encoder.config),
                                                *mixed_batch_qwen3)
    ref = reference_trace(reference_tower(path), *mixed_batch_qwen3)
    _close(stages["embeddings"], ref["embeddings"], "qvlearn vs transformers' Qwen4ExpVisionModel")
    qwen3_5 = qvlearn.preset_config("tiny-qwen3.5")
    assert qvlearn.stages.stage_names(encoder.config) == qvlearn.stages.stage_names(qwen3_5)
    pixels, _ = qvlearn.preprocess(images=[np.zeros((64, 64, 3), np.uint8)], family="qwen4_exp")
    assert pixels.shape[1] == 3 * 2 * 16 * 16


QWEN3_RMS = dataclasses.replace(  # a Qwen3-VL-shaped tower with RMSNorm and a SwiGLU MLP, DeepStack included
    families.FAMILIES["qwen3_vl"], name="qwen3_rms_swiglu", title="Qwen3-RMS-SwiGLU (a test family)",
    model_types=("qwen3_rms_swiglu",), vision_model_type="qwen3_rms_swiglu_vision",
    architectures={"qwen3_rms_swiglu": "Qwen3RmsSwigluForConditionalGeneration"},
    hf_defaults=dict(families.FAMILIES["qwen3_vl"].hf_defaults, hidden_act="silu"),
    norm="rms", mlp="gated", mlp_names=("gate_proj", "up_proj", "down_proj"), reference=())


def test_a_new_family_with_rmsnorm_and_swiglu_is_one_entry(tmp_path, monkeypatch, mixed_batch_qwen3, capsys):
    """Registered as one entry of the table and nothing else: config, weights (RMSNorm: no biases, the DeepStack
    norm too), spec = engine at every stage, the CLI's encode and taps, and --reference saying in one line that
    transformers has no such tower."""
    from qvlearn.tools import cli

    monkeypatch.setitem(families.FAMILIES, QWEN3_RMS.name, QWEN3_RMS)
    vision = dict(qvlearn.config.PRESETS["tiny-qwen3-vl"]["vision_config"], hidden_act="silu",
                  model_type="qwen3_rms_swiglu_vision")
    config_json = dict(model_type="qwen3_rms_swiglu", vision_config=vision)
    config = qvlearn.config.vision_config_from_dict(config_json)
    assert config.kind is QWEN3_RMS and config.deepstack_visual_indexes == (1, 2)
    shapes = qvlearn.weights.expected_shapes(config)
    assert "deepstack_merger_list.0.norm.weight" in shapes and not any(k.endswith("norm.bias") for k in shapes)
    assert "blocks.0.mlp.gate_proj.weight" in shapes and "blocks.0.mlp.linear_fc1.weight" not in shapes
    weights = qvlearn.weights.random_weights(config, seed=7)
    path = qvlearn.weights.save_checkpoint(tmp_path / "rms", config_json, weights, dtype="float32")
    stages = _engine_equals_spec_at_every_stage(config, weights, *mixed_batch_qwen3)
    assert "blocks.0.mlp.gate" in stages and "deepstack.1" in stages
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 140, 3), dtype=np.uint8)).save(image)
    assert cli.main(["encode", str(image), "--model", str(path), "--out", str(tmp_path / "e.npz"), "--quiet"]) == 0
    assert np.load(tmp_path / "e.npz")["deepstack.1"].shape[1] == config.out_hidden_size
    taps = tmp_path / "t.safetensors"
    assert cli.main(["taps", str(image), "--model", str(path), "--out", str(taps), "--quiet"]) == 0
    capsys.readouterr()
    assert cli.main(["taps", str(image), "--model", str(path), "--out", str(taps), "--reference", "--quiet"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "transformers has no vision tower for Qwen3-RMS-SwiGLU" in error, error


# --- every entry of the kernel table runs, on every backend ------------------------------------------------------
def _scaled(f, factor=1.01):
    return lambda *args, **kw: f(*args, **kw) * factor


WRONG = {  # entry -> (the preset whose forward runs it, a wrong replacement made from the right one)
    "position_ids": ("tiny-qwen2-vl", lambda f: lambda g, m: np.ascontiguousarray(f(g, m)[:, ::-1])),
    "inv_freq": ("tiny-qwen2-vl", lambda f: lambda d, t: f(d, t) * np.float32(1.5)),
    "cu_seqlens": ("tiny-qwen2-vl", lambda f: lambda g, m: f(g, m)[[0, -1]]),
    "window_index": ("tiny-qwen2.5-vl", lambda f: lambda g, m, ws, ps: f(g, m, 2 * ws, ps)),
    "window_inverse": ("tiny-qwen2.5-vl", lambda f: lambda index: np.arange(len(index), dtype=index.dtype)),
    "full_attention": ("tiny-qwen2.5-vl", lambda f: lambda cfg, i: not f(cfg, i)),
    "position_interpolation": ("tiny-qwen3-vl", lambda f: lambda g, side, m: tuple(
        np.ascontiguousarray(a[:, ::-1]) if k == 0 else a for k, a in enumerate(f(g, side, m)))),
    "deepstack_taps": ("tiny-qwen3-vl", lambda f: lambda cfg: {b: len(f(cfg)) - 1 - j for b, j in f(cfg).items()}),
    "patch_embed": ("tiny-qwen2-vl", _scaled),
    "position_embed": ("tiny-qwen3-vl", _scaled),
    "rotary": ("tiny-qwen2-vl", lambda f: lambda p, q: f(p, q)[::-1]),
    "window_order": ("tiny-qwen2.5-vl", lambda f: lambda cos, sin, rows: (cos, sin)),
    "linear": ("tiny-qwen2-vl", _scaled),
    "layer_norm": ("tiny-qwen2-vl", _scaled),
    "rms_norm": ("tiny-qwen2.5-vl", _scaled),
    "activations": ("tiny-qwen2-vl", lambda f: {k: _scaled(v) for k, v in f.items()}),
    "merger_act": ("tiny-qwen2-vl", _scaled),
    "split_qkv": ("tiny-qwen2-vl", lambda f: lambda qkv, heads: (lambda q, k, v: (k, q, v))(*f(qkv, heads))),
    "rotate": ("tiny-qwen2-vl", lambda f: lambda x, cos, sin: x),  # the README's example: RoPE left out
    "project": ("tiny-qwen2-vl", lambda f: lambda *a: f(*a)._replace(v=f(*a).v * 1.01)),
    "attend": ("tiny-qwen2-vl", _scaled),
    "finish": ("tiny-qwen2-vl", _scaled),
    "mlp_fc": ("tiny-qwen2-vl", _scaled),
    "mlp_gated": ("tiny-qwen2.5-vl", _scaled),
    "block": ("tiny-qwen2-vl", _scaled),
    "merger": ("tiny-qwen2-vl", _scaled),
    "merge_2x2": ("tiny-qwen2-vl", _scaled),
    "restore_order": ("tiny-qwen2.5-vl", lambda f: lambda merged, inverse: merged),
}


def test_the_wrong_table_names_every_entry():
    assert set(WRONG) == {f.name for f in dataclasses.fields(Kernels)}


@pytest.mark.parametrize("backend", ["numpy", "strict"])
@pytest.mark.parametrize("entry", sorted(WRONG))
def test_every_kernel_entry_is_called(entry, backend, mixed_batch_for):
    """Each entry, swapped for a wrong one, changes the output (embeddings and DeepStack features) on NumPy and on
    the strict stand-in for a GPU: no entry of the table is a hook that the forward bypasses."""
    preset, wrong = WRONG[entry]
    config = qvlearn.preset_config(preset)
    weights = qvlearn.weights.random_weights(config, seed=3)
    pixel_values, grid = mixed_batch_for(config)
    right = qvlearn.VisionEncoder(config, weights, backend=backend)
    swapped = right.with_kernels(KERNELS.replace(**{entry: wrong(getattr(KERNELS, entry))}))

    def outputs(encoder):
        out, features = encoder(pixel_values, grid, deepstack=True)
        return [encoder.backend.to_numpy(a) for a in (out, *features)]

    changed = [a.shape != b.shape or np.max(np.abs(a - b)) > 1e-4 * np.max(np.abs(a))
               for a, b in zip(outputs(right), outputs(swapped), strict=True)]
    assert any(changed), f"swapping {entry} changed nothing on {backend}"


def test_the_package_never_reaches_into_a_checkout():
    """An installed qvlearn has no repository around it: no module edits sys.path or imports the exercises."""
    root = Path(qvlearn.__file__).parent
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "sys.path" not in text, path
        tree = ast.parse(text)
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == "exercises" or n.startswith("exercises.") for n in names), path
