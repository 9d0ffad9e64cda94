"""Integer metadata against transformers.vision_utils: rotary position ids, cu_seqlens, window index."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import vision_utils as vu

import qvlearn
from qvlearn.engine.rotary import inv_freq, rotary_cos_sin, rotary_position_ids
from qvlearn.engine.window_index import cu_seqlens, inverse_permutation, window_index

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


@pytest.mark.parametrize("head_dim", [80, 72])
def test_rotation_as_pairs_is_rope_in_another_channel_order(head_dim):
    """``rotate_as_pairs`` (the block's complex-multiply RoPE) against transformers' ``apply_rotary_pos_emb_vision``:
    the same numbers with channel j next to j + d/2, so q k^T is unchanged; a wrong pairing would not be."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    from qvlearn.engine.rotary import rotate_as_pairs, rotation_factors

    rng = np.random.default_rng(7)
    pos = rotary_position_ids([(1, 12, 16)])
    cos, sin = rotary_cos_sin(pos, inv_freq(head_dim))
    n, heads, half = len(pos), 3, head_dim // 2
    q, k = (rng.standard_normal((n, heads, head_dim), dtype=np.float32) for _ in range(2))
    ref_q, ref_k = (t.numpy() for t in apply_rotary_pos_emb_vision(torch.from_numpy(q), torch.from_numpy(k),
                                                                    torch.from_numpy(cos), torch.from_numpy(sin)))
    rot = rotation_factors(cos, sin)
    assert rot.dtype == np.complex64 and rot.shape == (n, half)
    pq, pk = (rotate_as_pairs(x, rot, np.empty((n, heads, half), np.complex64)).view(np.float32) for x in (q, k))
    order = np.stack([np.arange(half), np.arange(half) + half], -1).reshape(-1)  # 0, d/2, 1, d/2 + 1, ...
    np.testing.assert_allclose(pq, ref_q[..., order], atol=2e-6)
    np.testing.assert_allclose(pk, ref_k[..., order], atol=2e-6)
    scores = np.einsum("nhd,mhd->hnm", pq, pk)
    np.testing.assert_allclose(scores, np.einsum("nhd,mhd->hnm", ref_q, ref_k), rtol=1e-4, atol=1e-4)
    gptj = np.concatenate([np.arange(0, head_dim, 2), np.arange(1, head_dim, 2)])  # would pair (0, 1), (2, 3), ...
    wq, wk = (rotate_as_pairs(x[..., gptj], rot, np.empty((n, heads, half), np.complex64)).view(np.float32)
              for x in (q, k))
    assert np.abs(np.einsum("nhd,mhd->hnm", wq, wk) - scores).max() > 0.1 * np.abs(scores).max()


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
