"""The package's layout holds: nothing patches, the model never imports the tools, the engine equals the spec at
every stage, the strict stand-in runs the path CuPy runs, and a new family is one entry of the family table."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

import qvlearn
from qvlearn import families, spec
from qvlearn.engine.kernels import KERNELS, Kernels
from qvlearn.window_index import patch_permutation

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
    """Each stage of the engine's trace against qvlearn.spec's functions applied to the engine's input of that
    stage (so that an error does not hide behind the stages before it)."""
    encoder = qvlearn.VisionEncoder(config, weights)
    stages = encoder.trace(pixel_values, grid, to_numpy=True, stages=["*"])
    w = {k: np.asarray(v, np.float32) for k, v in weights.items()}
    m, heads, d = config.spatial_merge_size, config.num_heads, config.head_dim
    conv = w["patch_embed.proj.weight"].reshape(config.width, -1)
    _close(stages["patch_embeds"], pixel_values @ conv.T + w.get("patch_embed.proj.bias", 0), "patch_embeds")
    x = stages["patch_embeds"]
    if config.kind.position_table:
        _close(stages["pos_embeds"], spec.learned_positions(w["pos_embed.weight"], grid, config), "pos_embeds")
        x = x + stages["pos_embeds"]
    cos, sin = spec.rotary_cos_sin(grid, config)
    _close(stages["cos"], cos, "cos")
    _close(stages["sin"], sin, "sin")
    full = spec.cu_seqlens(grid, m)
    np.testing.assert_array_equal(stages["cu_seqlens"], full)
    windows = None
    if config.kind.windows:
        order = patch_permutation(stages["window_index"], m)
        x, cos, sin, windows = x[order], cos[order], sin[order], stages["cu_window_seqlens"]
    for i in range(config.depth):
        bw = {k[len(f"blocks.{i}."):]: v for k, v in w.items() if k.startswith(f"blocks.{i}.")}
        segments = full if windows is None or config.is_full_attention_block(i) else windows
        at = lambda name: stages[f"blocks.{i}.{name}"]  # noqa: E731
        _close(at("norm1"), spec.norm(x, bw, "norm1", config), f"blocks.{i}.norm1")
        qkv = spec.linear(at("norm1"), bw, "attn.qkv").reshape(len(x), 3, heads, d)
        _close(at("attn.q"), spec.rotate(qkv[:, 0], cos, sin), f"blocks.{i}.attn.q")
        _close(at("attn.k"), spec.rotate(qkv[:, 1], cos, sin), f"blocks.{i}.attn.k")
        _close(at("attn"), spec.attention(at("norm1"), bw, cos, sin, segments, config), f"blocks.{i}.attn")
        _close(at("residual1"), x + at("attn"), f"blocks.{i}.residual1")
        _close(at("norm2"), spec.norm(at("residual1"), bw, "norm2", config), f"blocks.{i}.norm2")
        _close(at("mlp"), spec.mlp(at("norm2"), bw, config), f"blocks.{i}.mlp")
        _close(stages[f"blocks.{i}"], spec.block(x, bw, cos, sin, segments, config), f"blocks.{i}")
        x = stages[f"blocks.{i}"]
        if i in config.deepstack_visual_indexes:
            j = list(config.deepstack_visual_indexes).index(i)
            _close(stages[f"deepstack.{j}"], spec.merger(x, w, f"deepstack_merger_list.{j}.", config, True),
                   f"deepstack.{j}")
    norm_name = config.kind.merger_names[0]
    mw = {k[len("merger."):]: v for k, v in w.items() if k.startswith("merger.")}
    _close(stages[f"merger.{norm_name}"], spec.norm(x, mw, norm_name, config), f"merger.{norm_name}")
    _close(stages["merger"], spec.merger(x, w, "merger.", config), "merger")
    _close(stages["embeddings"], spec.forward(config, weights, pixel_values, grid), "embeddings")
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
    _close(numpy(pv, grid), out, "numpy (complex, in place) vs strict (halves)", tol=1e-6)
    assert seen == []  # NumPy's in-place complex rotation does not call K.rotate
    import types

    cupy = types.ModuleType("cupy")  # stands for the namespace array_namespace reports for CuPy arrays
    assert block.projection_step(cupy) is block.projection_step(strict.backend.xp) is block.project_by_halves
    assert block.projection_step(np) is block.project_in_place


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
    assert qvlearn.stages.stage_names(encoder.config) == qvlearn.stages.stage_names(qvlearn.preset_config("tiny-qwen3.5"))
    pixels, _ = qvlearn.preprocess(images=[np.zeros((64, 64, 3), np.uint8)], family="qwen4_exp")
    assert pixels.shape[1] == 3 * 2 * 16 * 16
