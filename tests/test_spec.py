"""qvlearn.spec, the readable forward, against transformers and against the fast engine (VisionEncoder)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qvlearn
from qvlearn import spec
from qvlearn.tools.check import rel_error
from qvlearn.tools.reference import reference_tower
from qvlearn.weights import load_weights

TOL = 1e-5
ALLOWED_IMPORTS = {"config": {"VisionConfig"}}  # the config type; the index builders live in spec.py itself


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


def test_spec_is_one_file():
    """spec.py imports NumPy, SciPy's erf and the config type, nothing else of qvlearn or beyond."""
    tree = ast.parse(Path(spec.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            assert node.module in ALLOWED_IMPORTS, node.module
            assert {a.name for a in node.names} <= ALLOWED_IMPORTS[node.module], node.module
        elif isinstance(node, ast.ImportFrom):
            assert node.module in ("__future__", "scipy.special"), node.module
        elif isinstance(node, ast.Import):
            assert all(a.name == "numpy" for a in node.names), [a.name for a in node.names]


def _edited_spec(old: str, new: str):
    """A copy of spec.py with one line of source changed: a wrong spec, without patching anything shared."""
    import types

    source = Path(spec.__file__).read_text(encoding="utf-8")
    assert source.count(old) == 1, old
    module = types.ModuleType("qvlearn.wrong_spec")
    module.__package__ = "qvlearn"
    exec(compile(source.replace(old, new), "wrong_spec.py", "exec"), module.__dict__)
    return module


@pytest.mark.parametrize("old, new", [
    ("out = out[np.argsort(merged_order)]", "out = out"),                       # the window order left in
    ("s, unit = window_size // m // patch_size, m * m", "s, unit = window_size // patch_size, m * m"),  # px, not tokens
    ("a.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3)", "a.reshape(h // m, m, w // m, m)"),  # raster RoPE
    ("np.minimum(y0.astype(np.int64)[:, None] + np.arange(2), side - 1)",
     "np.minimum(y0.astype(np.int64)[:, None] + np.arange(2), side - 2)"),      # the upper neighbour clamped early
])
def test_a_wrong_spec_is_caught(checkpoint, mixed_batch, mixed_batch_qwen3, old, new):
    """The parity check can fail: a spec with one index rule wrong departs from transformers."""
    preset, batch = ("tiny-qwen3-vl", mixed_batch_qwen3) if "side" in old else ("tiny-qwen2.5-vl", mixed_batch)
    path = checkpoint(preset)
    config = qvlearn.read_config(path)
    right = spec.forward(config, load_weights(path, config), *batch)
    wrong = _edited_spec(old, new).forward(config, load_weights(path, config), *batch)
    assert rel_error(wrong, right) > 1e-3


GRIDS = st.lists(st.tuples(st.integers(1, 3), st.integers(1, 24).map(lambda v: 2 * v),
                           st.integers(1, 24).map(lambda v: 2 * v)), min_size=1, max_size=3)


@settings(max_examples=150, deadline=None)
@given(grid=GRIDS, window=st.sampled_from([(112, 14), (224, 14), (128, 16), (56, 14)]))
def test_the_index_builders_equal_transformers_and_the_engine(grid, window):
    """spec's bookkeeping against transformers' vision_utils (the reference) and the engine's own builders, over
    grids of images and videos, square and odd, with several window sizes."""
    from transformers import vision_utils as vu

    from qvlearn.engine.pos_embed import interpolation_indices_and_weights
    from qvlearn.engine.rotary import rotary_position_ids
    from qvlearn.engine.window_index import cu_seqlens, window_index

    g = np.asarray(grid, dtype=np.int64)
    tg = torch.from_numpy(g)
    ids = spec.position_ids(g)
    np.testing.assert_array_equal(ids, vu.get_vision_position_ids(tg, 2).numpy())
    np.testing.assert_array_equal(ids, rotary_position_ids(g))
    bounds = spec.cu_seqlens(g)
    np.testing.assert_array_equal(bounds, vu.get_vision_cu_seqlens(tg).numpy())
    np.testing.assert_array_equal(bounds, cu_seqlens(g))
    order, cu = spec.window_index(g, 2, *window)
    theirs, their_cu = vu.get_vision_window_index(tg, 2, *window)
    np.testing.assert_array_equal(order, theirs.numpy())
    np.testing.assert_array_equal(cu, their_cu.numpy())
    np.testing.assert_array_equal(order, window_index(g, 2, *window)[0])
    for side in (8, 48):
        idx, wts = spec.table_taps(g, side)
        t_idx, t_wts = vu.get_vision_interpolation_indices_and_weights(tg, side, align_corners=True,
                                                                       spatial_merge_size=2)
        np.testing.assert_array_equal(idx, t_idx.numpy())
        np.testing.assert_array_equal(wts, t_wts.numpy())  # bit for bit, float32
        e_idx, e_wts = interpolation_indices_and_weights(g, side)
        np.testing.assert_array_equal(idx, e_idx)
        np.testing.assert_array_equal(wts, e_wts)


def test_a_missing_weight_is_named(checkpoint, mixed_batch):
    path = checkpoint("tiny-qwen2-vl")
    config = qvlearn.read_config(path)
    weights = load_weights(path, config)
    del weights["blocks.1.mlp.fc2.bias"]
    with pytest.raises(ValueError, match="no 'mlp.fc2.bias'"):
        spec.forward(config, weights, *mixed_batch)


def test_spec_taps_every_stage_of_the_tap_table(checkpoint, mixed_batch):
    from qvlearn.stages import stage_names

    path = checkpoint("tiny-qwen2.5-vl")
    config = qvlearn.read_config(path)
    seen = []
    spec.forward(config, load_weights(path, config), *mixed_batch, tap=lambda name, array: seen.append(name))
    assert sorted(seen) == sorted(stage_names(config))
