"""The attention kernel: the max-free softmax over key blocks, its fallback, and torch's sdpa as the oracle."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qvlearn.backend import LOG2_E
from qvlearn.engine import attention
from qvlearn.engine.attention import (
    SegmentPlan,
    online_softmax_attention,
    parallel_segment_attention,
    segment_attention,
)


def sdpa(q, k, v, cu, scale, dtype=np.float64):
    """torch's scaled_dot_product_attention (float64 unless told), one segment at a time: ``[N, heads, d]``."""
    out = np.empty(q.shape, dtype=dtype)
    for a, b in zip(cu[:-1], cu[1:]):
        qs, ks, vs = (torch.from_numpy(x[a:b].astype(dtype)).transpose(0, 1) for x in (q, k, v))
        out[a:b] = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs, scale=scale).transpose(0, 1).numpy()
    return out


def rel(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def assert_as_close_as_torch_float32(out, q, k, v, cu, scale):
    """Within 2e-6 of the float64 result, or (for scores of hundreds, where float32 scores themselves carry
    ~1e-4 of rounding) no further from it than twice torch's own float32 sdpa."""
    exact = sdpa(q, k, v, cu, scale)
    assert rel(out, exact) <= max(2e-6, 2 * rel(sdpa(q, k, v, cu, scale, np.float32), exact))


def qkv(n, heads=4, d=16, seed=0, q_scale=1.0):
    rng = np.random.default_rng(seed)
    q, k, v = (rng.standard_normal((n, heads, d), dtype=np.float32) for _ in range(3))
    return q * np.float32(q_scale), k, v


@pytest.mark.parametrize("cu", [[0, 300], [0, 64, 128, 192, 250, 300], [0, 100, 100, 300]])
@pytest.mark.parametrize("key_block", [None, 1, 7, 64, 512])
@pytest.mark.parametrize("chunk_bytes", [2**40, 4096])
def test_key_blocks_and_chunks_match_sdpa(cu, key_block, chunk_bytes):
    q, k, v = qkv(cu[-1])
    plan = SegmentPlan.build(np.array(cu), np.asarray)
    out = segment_attention(q, k, v, plan, 0.25, chunk_bytes, key_block)
    assert out.dtype == np.float32
    assert rel(out, sdpa(q, k, v, cu, 0.25)) < 2e-6


@pytest.mark.parametrize("q_scale, why", [(60.0, "scores up to ~1000: exp overflows without the max"),
                                          (-1e-3, "ordinary scores")])
def test_large_scores_take_the_max_subtracting_path(monkeypatch, q_scale, why):
    q, k, v = qkv(200, q_scale=q_scale)
    cu = [0, 200]
    plan = SegmentPlan.build(np.array(cu), np.asarray)
    calls = []
    original = attention.online_softmax_attention
    monkeypatch.setattr(attention, "online_softmax_attention", lambda *a: calls.append(1) or original(*a))
    out = segment_attention(q, k, v, plan, 0.25, key_block=64)
    assert np.all(np.isfinite(out))
    assert_as_close_as_torch_float32(out, q, k, v, cu, 0.25)
    assert bool(calls) == (q_scale > 1), why


def test_tiny_scores_take_the_max_subtracting_path():
    """Every score of a row near -200: exp underflows to 0 without the max (0 / 0)."""
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(16).astype(np.float32)
    direction /= np.linalg.norm(direction)
    k = (-direction + 0.05 * rng.standard_normal((128, 2, 16))).astype(np.float32)
    q = np.broadcast_to(200 * direction, (128, 2, 16)).astype(np.float32).copy()
    v = rng.standard_normal((128, 2, 16), dtype=np.float32)
    cu = [0, 128]
    out = segment_attention(q, k, v, SegmentPlan.build(np.array(cu), np.asarray), 1.0, key_block=32)
    assert np.all(np.isfinite(out))
    assert_as_close_as_torch_float32(out, q, k, v, cu, 1.0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_without_the_fallback_the_check_would_fail(monkeypatch):
    """The guard is what keeps large scores right: without it the result is not finite."""
    q, k, v = qkv(200, q_scale=60.0)
    monkeypatch.setattr(attention, "_max_free_ok", lambda out, denominator: True)
    out = segment_attention(q, k, v, SegmentPlan.build(np.array([0, 200]), np.asarray), 0.25, key_block=64)
    assert not np.all(np.isfinite(out))


def test_one_large_row_in_a_chunk():
    q, k, v = qkv(256)
    q[17] *= 80  # one query with huge scores among ordinary ones
    cu = [0, 256]
    out = segment_attention(q, k, v, SegmentPlan.build(np.array(cu), np.asarray), 0.25, key_block=100)
    assert rel(np.delete(out, 17, 0), np.delete(sdpa(q, k, v, cu, 0.25), 17, 0)) < 2e-6
    assert_as_close_as_torch_float32(out, q, k, v, cu, 0.25)


def test_online_softmax_matches_sdpa_at_any_scale():
    for q_scale in (1e-3, 1.0, 300.0):
        q, k, v = qkv(96, q_scale=q_scale)
        t = lambda x: np.ascontiguousarray(x.transpose(1, 0, 2))  # [heads, N, d]
        base2 = t(q) * np.float32(0.25 * LOG2_E)  # the kernel exponentiates base 2
        out = online_softmax_attention(base2, np.swapaxes(t(k), -1, -2), t(v), 10)
        assert_as_close_as_torch_float32(out.transpose(1, 0, 2), q, k, v, [0, 96], 0.25)


@pytest.mark.parametrize("score, v_scale, falls_back", [(75.0, 1.0, False), (85.0, 1.0, True), (40.0, 1e30, True)])
def test_the_edges_of_the_safe_range(monkeypatch, score, v_scale, falls_back):
    """A top score of 75 stays on the fast path (row sums ~1e32); 85 overflows the sum's range; values of 1e30
    overflow exp(s) @ v: both are caught and recomputed."""
    rng = np.random.default_rng(2)
    q, k, v = qkv(64)
    k[:] = rng.standard_normal((64, 4, 16)).astype(np.float32) * 0.1
    k[7] = q[3] / np.linalg.norm(q[3], axis=-1, keepdims=True) ** 2 * score  # q[3] . k[7] = score, per head
    v *= np.float32(v_scale)
    cu = [0, 64]
    calls = []
    original = attention.online_softmax_attention
    monkeypatch.setattr(attention, "online_softmax_attention", lambda *a: calls.append(1) or original(*a))
    out = segment_attention(q, k, v, SegmentPlan.build(np.array(cu), np.asarray), 1.0, key_block=16)
    assert bool(calls) == falls_back
    assert np.all(np.isfinite(out))
    assert_as_close_as_torch_float32(out, q, k, v, cu, 1.0)


def test_nan_is_not_hidden():
    q, k, v = qkv(64)
    q[5, 1, 3] = np.nan
    out = segment_attention(q, k, v, SegmentPlan.build(np.array([0, 64]), np.asarray), 0.25, key_block=16)
    assert np.all(np.isnan(out[5, 1]))
    assert np.all(np.isfinite(np.delete(out, 5, axis=0)))


def test_threaded_heads_use_cache_sized_tiles_and_match_sdpa(monkeypatch):
    """Each thread takes one head, its score tiles at most PART_CHUNK_BYTES with CPU_KEY_BLOCK keys: seen on the
    tiles the kernel actually forms (every call of the tile function recorded)."""
    from qvlearn.engine import parallel

    q, k, v = qkv(1500, heads=6, d=24)
    cu = [0, 1100, 1500]
    tiles, original = [], attention._max_free_softmax_v

    def recording(qc, kt, vs, key_block):
        tiles.append((qc.shape, kt.shape, key_block))
        return original(qc, kt, vs, key_block)
    monkeypatch.setattr(attention, "_max_free_softmax_v", recording)
    parallel.set_threads(2)
    try:
        out = parallel_segment_attention(q, k, v, SegmentPlan.build(np.array(cu), np.asarray), 24 ** -0.5)
    finally:
        parallel.set_threads(None)
    assert rel(out, sdpa(q, k, v, cu, 24 ** -0.5)) < 2e-6
    assert len(tiles) == 2 * 6  # two segment lengths, six heads
    for (g, heads, rows, _), (_, _, _, keys), kb in tiles:
        assert heads == 1  # one head per thread
        assert kb == min(keys, attention.CPU_KEY_BLOCK)  # the 1100 keys in blocks of 512, the 400 in one
        assert g * heads * rows * kb * 4 <= attention.PART_CHUNK_BYTES  # the tile fits the budget
