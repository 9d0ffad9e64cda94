"""Integer metadata against transformers.vision_utils: rotary position ids, cu_seqlens, window index."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import vision_utils as vu

import qvlearn
from qvlearn.rotary import inv_freq, rotary_cos_sin, rotary_position_ids
from qvlearn.window_index import cu_seqlens, inverse_permutation, window_index

# (t, h, w) with h, w even: merged grids from 1 to 20 per side, several frame pairs
entry = st.tuples(st.integers(1, 3), st.integers(1, 20).map(lambda x: 2 * x), st.integers(1, 20).map(lambda x: 2 * x))
grids = st.lists(entry, min_size=1, max_size=5)


@settings(max_examples=200, deadline=None)
@given(grid=grids, window=st.sampled_from([112, 56, 168, 224]))
def test_indices_match_transformers(grid, window):
    g = torch.tensor(grid)
    np.testing.assert_array_equal(rotary_position_ids(grid), vu.get_vision_position_ids(g, 2).numpy())
    ours_cu = cu_seqlens(grid)
    ref_cu = vu.get_vision_cu_seqlens(g).numpy()
    assert ours_cu.dtype == ref_cu.dtype == np.int32
    np.testing.assert_array_equal(ours_cu, ref_cu)
    w_index, cu_window = window_index(grid, 2, window, 14)
    ref_index, ref_cu_window = vu.get_vision_window_index(g, 2, window, 14)
    np.testing.assert_array_equal(w_index, ref_index.numpy())
    np.testing.assert_array_equal(cu_window, ref_cu_window.numpy())
    assert cu_window.dtype == np.int32
    np.testing.assert_array_equal(inverse_permutation(w_index), torch.argsort(ref_index).numpy())


@pytest.mark.parametrize("grid, expected_index, expected_cu", [
    ([(1, 8, 8)], list(range(16)), [0, 64]),
    ([(1, 6, 10)], [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 4, 9, 14], [0, 48, 60]),
    ([(2, 4, 4)], list(range(8)), [0, 16, 32]),
])
def test_window_index_spec_examples(grid, expected_index, expected_cu):
    w_index, cu_window = window_index(grid)
    assert w_index.tolist() == expected_index
    assert cu_window.tolist() == expected_cu


def test_window_index_16x20():
    w_index, cu_window = window_index([(1, 16, 20)])
    assert cu_window.tolist() == [0, 64, 128, 160, 224, 288, 320]
    assert w_index[:9].tolist() == [0, 1, 2, 3, 10, 11, 12, 13, 20]


def test_position_ids_and_cu_seqlens_spec_examples():
    ids = rotary_position_ids([(1, 4, 6)])
    assert ids[:12].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [0, 2], [0, 3], [1, 2], [1, 3], [0, 4], [0, 5],
                                 [1, 4], [1, 5]]
    assert ids[12:14].tolist() == [[2, 0], [2, 1]]
    assert cu_seqlens([(1, 4, 4), (2, 2, 4)]).tolist() == [0, 16, 24, 32]


def test_rotary_cos_sin_match_transformers():
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLVisionRotaryEmbedding

    cfg = Qwen2_5_VLConfig(vision_config=dict(hidden_size=1280, num_heads=16)).vision_config
    rope = Qwen2_5_VLVisionRotaryEmbedding(cfg)
    grid = [(1, 30, 42), (2, 8, 6)]
    pos = rotary_position_ids(grid)
    freqs = inv_freq(80)
    np.testing.assert_allclose(freqs, rope.inv_freq.numpy(), rtol=2.5e-7)  # float32 pow: within 1 ulp
    assert freqs.dtype == np.float32 and freqs.shape == (20,)
    cos, sin = rotary_cos_sin(pos, freqs)
    ref_cos, ref_sin = rope(torch.zeros(1), torch.from_numpy(pos))
    assert cos.dtype == np.float32 and cos.shape == (len(pos), 80)
    np.testing.assert_allclose(cos, ref_cos.numpy(), atol=1e-6)
    np.testing.assert_allclose(sin, ref_sin.numpy(), atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    ([(1, 3, 4)], "multiples of spatial_merge_size"),
    ([(0, 4, 4)], "positive"),
    ([(1, -2, 4)], "positive"),
    ([(1, 4)], r"shape \[k, 3\]"),
    ([], r"shape \[k, 3\]"),
    ([(1.5, 4, 4)], "integers"),
    ([("a", 4, 4)], "integers"),
])
def test_bad_grids(bad, match):
    with pytest.raises(qvlearn.InputError, match=match):
        cu_seqlens(bad)
