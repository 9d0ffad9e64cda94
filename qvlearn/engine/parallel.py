"""CPU threading for the NumPy backend: the same kernels, run on every core.

NumPy's matmuls use all cores through the BLAS, but its elementwise passes (norms, RoPE, activations,
the softmax, bias and residual adds) run on one. Everything in a block except attention treats each
row on its own, and attention treats each head on its own, so both can be split into independent
parts, one per core, each part calling the very same kernel with a single-threaded BLAS. The results
are the serial ones up to the BLAS's own summation order (about 1e-7 relative).

Other backends (CuPy, the strict test stand-in) run each kernel once on the whole array: a GPU
parallelises inside every kernel.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from array_api_compat import array_namespace, is_numpy_namespace

MIN_ROWS_PER_PART = 64  # below this, threads cost more than they save
MAX_ROWS_PER_PART = 1536  # above this, more rounds of parts: the MLP's [rows, 4D] temporaries stay near the caches
# (measured: the row-parallel work of 4 Qwen2-VL-2B blocks at 16384 patches 15.1 s -> 11.6 s; 7B at 9216, -10%;
# 2352 patches stay at one part per core, where thinner matmuls were slower)

_POOL: ThreadPoolExecutor | None = None
_CONTROLLER = None
_THREADS: int | None = None  # set_threads' choice; None: every core this process may use
_GLOBAL_LIMIT = None


def set_threads(n: int | None) -> None:
    """Use ``n`` threads for qvlearn's row and head parts and for the BLAS (None: every core again). The
    command line's ``--threads``; a program embedding qvlearn calls it once at start."""
    global _THREADS, _POOL, _GLOBAL_LIMIT
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        from ..errors import QvlearnError

        raise QvlearnError(f"the thread count must be a whole number >= 1, got {n!r}")
    if _POOL is not None:
        _POOL.shutdown(wait=True)
        _POOL = None
    _THREADS = n
    if _GLOBAL_LIMIT is not None:
        _GLOBAL_LIMIT.restore_original_limits()
        _GLOBAL_LIMIT = None
    if n is not None:
        from threadpoolctl import threadpool_limits

        _GLOBAL_LIMIT = threadpool_limits(limits=n, user_api="blas")


def cores() -> int:
    """CPU cores qvlearn uses: :func:`set_threads`' count, else the cores this process may run on (its affinity
    mask, not the machine's count)."""
    if _THREADS is not None:
        return _THREADS
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=cores(), thread_name_prefix="qvlearn")
    return _POOL


def single_threaded_blas():
    """A context in which the BLAS uses one thread (the parts run side by side instead)."""
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER.limit(limits=1, user_api="blas")


def run_parts(fn, bounds) -> list:
    """``[fn(a, b) for a, b in consecutive pairs of bounds]``, the calls on the thread pool."""
    with single_threaded_blas():
        futures = [_pool().submit(fn, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        try:
            return [f.result() for f in futures]
        except BaseException:  # Ctrl-C or an error in one part: the parts not yet started never start
            for f in futures:
                f.cancel()
            raise


def split_bounds(n: int, parts: int) -> list[int]:
    return [n * i // parts for i in range(parts + 1)]


def row_parallel(fn, x):
    """``fn(start, stop)`` computes rows ``start:stop`` of a row-wise computation over the rows of ``x``
    and returns an array, a tuple of arrays, or None (having written its rows into arrays made beforehand).
    Returns what ``fn(0, len(x))`` would, computed on NumPy in
    one part per core, or in a few rounds of such parts when a part would exceed :data:`MAX_ROWS_PER_PART`
    rows (the parts concatenated along axis 0), and in one call on other backends."""
    xp = array_namespace(x)
    n = x.shape[0]
    parts = min(cores(), n // MIN_ROWS_PER_PART)
    if parts < 2 or not is_numpy_namespace(xp):
        return fn(0, n)
    parts *= -(-n // (parts * MAX_ROWS_PER_PART))  # a whole number of rounds of at most MAX_ROWS_PER_PART rows
    results = run_parts(fn, split_bounds(n, parts))
    if results[0] is None:  # fn wrote its rows into arrays of its own
        return None
    if isinstance(results[0], tuple):
        return tuple(parallel_concat([r[i] for r in results], axis=0) for i in range(len(results[0])))
    return parallel_concat(results, axis=0)


def parallel_concat(arrays, axis: int):
    """``np.concatenate(arrays, axis)`` (NumPy arrays), each part copied into place by its own thread: the
    concatenations after the parts (the q, k, v of a block: 36 MB at 2352 patches of the 2B shape) would
    otherwise be single-threaded copies."""
    if len(arrays) == 1:
        return arrays[0]
    edges = np.cumsum([0] + [a.shape[axis] for a in arrays])
    shape = list(arrays[0].shape)
    shape[axis] = int(edges[-1])
    out = np.empty(shape, dtype=arrays[0].dtype)

    def copy(i, _):  # part i into out[..., edges[i]:edges[i + 1], ...]
        index = [slice(None)] * out.ndim
        index[axis] = slice(int(edges[i]), int(edges[i + 1]))
        out[tuple(index)] = arrays[i]
    run_parts(copy, list(range(len(arrays) + 1)))
    return out
