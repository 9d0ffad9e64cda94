"""CPU threading of the NumPy backend: row ranges and head groups run side by side, same results."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import qvlearn
from qvlearn.engine.attention import DEFAULT_CHUNK_BYTES as CHUNK
from qvlearn.engine.attention import SegmentPlan, parallel_segment_attention, segment_attention
from qvlearn.engine.block import vision_block
from qvlearn.engine.kernels import KERNELS
from qvlearn.engine.parallel import MIN_ROWS_PER_PART, cores, row_parallel
from qvlearn.tools.check import assert_close

rng = np.random.default_rng(7)


@pytest.fixture(autouse=True)
def four_threads():
    """Four parts whatever the machine's cores, so that the threaded path is the one compared (on a one-core
    machine row_parallel would call the function once and compare it with itself)."""
    from qvlearn.engine.parallel import set_threads

    set_threads(4)
    yield
    set_threads(None)


def test_row_parallel_matches_one_call_and_runs_side_by_side():
    x = rng.standard_normal((1000, 48), dtype=np.float32)
    w = rng.standard_normal((48, 40), dtype=np.float32)
    parts = min(cores(), len(x) // MIN_ROWS_PER_PART)
    assert parts == 4
    barrier = threading.Barrier(parts, timeout=10) if parts >= 2 else None
    seen = set()

    def fn(a, b):
        if (a, b) != (0, len(x)) and barrier is not None:
            barrier.wait()  # every part reaches here before any goes on: they run at the same time
            seen.add(threading.current_thread().name)
        y = x[a:b] @ w
        return y, np.abs(y) * 2

    one = fn(0, len(x))
    split = row_parallel(fn, x)
    assert isinstance(split, tuple) and len(split) == 2
    for s, o in zip(split, one):
        assert s.shape == o.shape
        assert_close(s, o, rtol=1e-6, name="row ranges vs one call")  # max|diff| / max|ref|
    if barrier is not None:
        assert len(seen) == parts and all(name.startswith("qvlearn") for name in seen)


def test_few_rows_run_in_the_callers_thread():
    x = np.ones((2 * MIN_ROWS_PER_PART - 1, 4), np.float32)
    seen = []
    out = row_parallel(lambda a, b: (seen.append((a, b, threading.current_thread().name)), x[a:b] * 3)[1], x)
    assert seen == [(0, len(x), threading.current_thread().name)]
    np.testing.assert_array_equal(out, x * 3)


@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-qwen3.5"])
def test_threaded_block_matches_the_strict_backend(preset):
    """The block on NumPy (row ranges and heads threaded) against the same block on the strict stand-in,
    which runs every kernel once on the whole array."""
    cfg = qvlearn.preset_config(preset)
    n, dim, d = 700, cfg.width, cfg.head_dim
    shapes = qvlearn.weights.expected_shapes(cfg)
    w = {k[len("blocks.0."):]: (rng.standard_normal(s, dtype=np.float32) * 0.1)
         for k, s in shapes.items() if k.startswith("blocks.0.")}
    x = rng.standard_normal((n, dim), dtype=np.float32)
    angles = rng.uniform(-3, 3, (n, d // 2)).astype(np.float32)
    angles = np.concatenate([angles, angles], axis=-1)  # RoPE's layout: the second half repeats the first
    cos, sin = np.cos(angles), np.sin(angles)
    cu = np.array([0, 300, 364, 700])
    strict = qvlearn.get_backend("strict")
    ref = vision_block(KERNELS, strict.asarray(x), {k: strict.asarray(v) for k, v in w.items()}, cfg,
                       strict.asarray(cos), strict.asarray(sin), SegmentPlan.build(cu, strict.asarray), CHUNK)
    ours = vision_block(KERNELS, x, w, cfg, cos, sin, SegmentPlan.build(cu, np.asarray), CHUNK)
    assert_close(ours, strict.to_numpy(ref), rtol=1e-6, name=f"{preset} block, threaded vs one call")


def test_parts_may_write_into_arrays_of_their_own():
    """``fn`` returning None: the parts wrote their rows in place (the block's projection step does)."""
    x = rng.standard_normal((1000, 8), dtype=np.float32)
    out = np.full_like(x, np.nan)

    def fn(a, b):
        out[a:b] = x[a:b] * 2
    assert row_parallel(fn, x) is None
    np.testing.assert_array_equal(out, x * 2)


def test_head_groups_match_one_call():
    n, heads, d = 500, 6, 16
    q, k, v = (rng.standard_normal((n, heads, d), dtype=np.float32) for _ in range(3))
    plan = SegmentPlan.build(np.array([0, 100, 164, 500]), np.asarray)
    assert_close(parallel_segment_attention(q, k, v, plan, d ** -0.5), segment_attention(q, k, v, plan, d ** -0.5),
                 rtol=1e-6, name="head groups vs one call")
