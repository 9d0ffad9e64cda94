"""qvlearn.spec, the readable forward, against transformers and against the fast engine (VisionEncoder)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

import qvlearn
from qvlearn import spec
from qvlearn.tools.check import rel_error
from qvlearn.tools.reference import reference_tower
from qvlearn.weights import load_weights

TOL = 1e-5
ALLOWED_IMPORTS = {  # the index builders and the config, from the modules that own them; nothing of the engine
    "config": {"VisionConfig"}, "pos_embed": {"interpolation_indices_and_weights"},
    "rotary": {"rotary_position_ids"}, "window_index": {"cu_seqlens", "window_index"},
}


def _check(path, pixel_values, grid):
    config = qvlearn.read_config(path)
    ours, features = spec.forward(config, load_weights(path, config), pixel_values, grid, deepstack=True)
    with torch.no_grad():
        out = reference_tower(path)(torch.from_numpy(pixel_values), torch.from_numpy(np.asarray(grid)))
    assert ours.dtype == np.float32 and ours.shape == tuple(out.pooler_output.shape)
    assert rel_error(ours, out.pooler_output.numpy()) <= TOL
    engine, engine_features = qvlearn.load_encoder(path)(pixel_values, grid, deepstack=True)
    assert rel_error(ours, engine) <= TOL
    theirs = list(getattr(out, "deepstack_features", None) or [])
    assert len(features) == len(theirs) == len(engine_features) == len(config.deepstack_visual_indexes)
    for mine, ref, fast in zip(features, theirs, engine_features, strict=True):
        assert rel_error(mine, ref.numpy()) <= TOL and rel_error(mine, fast) <= TOL
    return ours


@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-qwen2.5-vl"])
def test_spec_matches_transformers_and_the_engine(checkpoint, mixed_batch, preset):
    """Two images (one whose merged grid does not divide into windows) and a 3-frame video in one call."""
    _check(checkpoint(preset), *mixed_batch)


@pytest.mark.parametrize("preset", ["tiny-qwen3-vl", "tiny-qwen3.5"])
def test_spec_matches_transformers_third_generation(checkpoint, mixed_batch_qwen3, preset):
    _check(checkpoint(preset), *mixed_batch_qwen3)


@pytest.mark.parametrize("preset, overrides", [
    ("qwen2-vl-2b", dict(depth=2)),
    ("qwen2.5-vl-7b", dict(depth=2, fullatt_block_indexes=[1])),
    ("qwen3-vl-8b", dict(depth=2, deepstack_visual_indexes=[0])),  # heads of 72, the 48 x 48 table
])
def test_spec_at_released_widths(checkpoint, mixed_batch, mixed_batch_qwen3, preset, overrides):
    batch = mixed_batch_qwen3 if preset.startswith("qwen3") else mixed_batch
    _check(checkpoint(preset, **overrides), *batch)


def test_spec_imports_nothing_of_the_engine():
    tree = ast.parse(Path(spec.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            assert node.module in ALLOWED_IMPORTS, node.module
            assert {a.name for a in node.names} <= ALLOWED_IMPORTS[node.module], node.module
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("qvlearn"):
            raise AssertionError(f"absolute import of {node.module}")
        elif isinstance(node, ast.Import):
            assert all(not a.name.startswith("qvlearn") for a in node.names)


def test_a_wrong_spec_is_caught(checkpoint, mixed_batch, monkeypatch):
    """The parity check can fail: the spec with the windows left in window order fails it."""
    path = checkpoint("tiny-qwen2.5-vl")
    config = qvlearn.read_config(path)
    right = spec.forward(config, load_weights(path, config), *mixed_batch)
    monkeypatch.setattr(np, "argsort", lambda a, *args, **kw: np.arange(len(a)))
    wrong = spec.forward(config, load_weights(path, config), *mixed_batch)
    assert rel_error(wrong, right) > 0.1
