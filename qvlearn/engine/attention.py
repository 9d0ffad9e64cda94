"""The engine's attention kernel: softmax(q k^T / sqrt(d)) v inside each segment, bounded memory, threads.

Explained in ``notebooks/06_attention.ipynb``; the plain form is :func:`qvlearn.spec.attention`. The block
around it (fused qkv, RoPE, output projection) is :mod:`qvlearn.engine.block`.

* ``qkv`` is ``Linear(D, 3D)``; its output viewed as ``[N, 3, heads, head_dim]`` is
  ``[q (all heads) | k (all heads) | v (all heads)]``, each head-major.
* RoPE on q and k (not v), scale ``head_dim ** -0.5`` applied to the scores, softmax in float32,
  no causal mask.
* Segments come from ``cu_seqlens``: a token attends only inside its segment (its image's frame pair
  in full-attention blocks, its window in Qwen2.5-VL's window blocks). This is exactly a
  block-diagonal mask, computed without ever forming the ``[N, N]`` matrix.

Memory stays bounded: segments of equal length are batched together, and the scores are computed in
chunks of queries (and of segments) so that no score tensor exceeds ``chunk_bytes``. A 16384-patch
image through a full-attention block needs ~64 MiB of scores per chunk instead of 17 GB.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from array_api_compat import array_namespace, is_numpy_namespace

from ..backend import LOG2_E, exp2_
from .parallel import cores, parallel_concat, run_parts, split_bounds

DEFAULT_CHUNK_BYTES = 64 * 2**20
PART_CHUNK_BYTES = 4 * 2**20  # per CPU thread: a 2048 x 512 score tile, near the core's 2 MiB L2 (1-8 MiB: within 5%)


@dataclass
class SegmentGroup:
    """Segments of one length ``length``, ``count`` of them; their rows are either the contiguous
    range ``[start, start + count*length)`` (``rows is None``) or the backend index array ``rows``."""

    length: int
    count: int
    start: int
    rows: object = None


@dataclass
class SegmentPlan:
    """How to run attention over the segments of one ``cu_seqlens``: built once per forward on the
    host, its index arrays moved to the backend once and reused by every block that uses it."""

    groups: list
    inverse: object  # backend index array putting concatenated group outputs back in row order, or None
    num_rows: int

    @classmethod
    def build(cls, cu_seqlens: np.ndarray, to_backend) -> "SegmentPlan":
        """The plan of the segments ``cu_seqlens[i]:cu_seqlens[i+1]``. ``to_backend`` moves a host index array
        onto the arrays' backend, once: ``np.asarray`` for NumPy arrays, ``encoder.backend.asarray`` (CuPy, the
        strict stand-in) otherwise."""
        cu = np.asarray(cu_seqlens, dtype=np.int64)
        lengths = np.diff(cu)
        starts = cu[:-1]
        groups, order = [], []
        for length in np.unique(lengths[lengths > 0]):
            seg = np.nonzero(lengths == length)[0]
            rows = (starts[seg][:, None] + np.arange(length)).reshape(-1)  # [count * length]
            contiguous = bool(np.all(np.diff(rows) == 1))
            groups.append(SegmentGroup(int(length), len(seg), int(rows[0]),
                                       None if contiguous else to_backend(rows)))
            order.append(rows)
        perm = np.concatenate(order)
        identity = bool(np.array_equal(perm, np.arange(cu[-1])))
        inverse = None
        if not identity:
            inverse = np.empty_like(perm)
            inverse[perm] = np.arange(len(perm))
            inverse = to_backend(inverse)
        return cls(groups, inverse, int(cu[-1]))


# The row sums of exp(scores) inside which the max-free softmax is exact to float32 rounding (see
# segment_attention): the largest term is then >= 1e-20 / keys, so every term that matters (>= 2**-24 of it) is
# a normal float, and neither exp nor the sum overflowed (the largest score is at most ~80.6; float32's exp
# overflows above 88.7). exp(scores) @ v may still overflow for large v: the output is checked to be finite.
SAFE_SUM_RANGE = (1e-20, 1e35)
CPU_KEY_BLOCK = 512  # keys per score tile on CPU threads (measured: 256-2048 within 5%, 512 best)


def segment_attention(q, k, v, plan: SegmentPlan, scale: float, chunk_bytes: int = DEFAULT_CHUNK_BYTES,
                      key_block: int | None = None):
    """``q, k, v [N, heads, d]`` -> ``[N, heads, d]``, softmax(q k^T * scale) v inside each segment.

    Queries are taken in chunks (and equal-length segments in batches) so that no score tile exceeds
    ``chunk_bytes``; keys in blocks of ``key_block`` (the whole segment when None). For each tile:

    * the scale is applied to q (``N*d`` multiplies instead of ``N*N``), together with ``log2(e)``: the tiles
      then take ``2 ** s``, which NumPy computes faster than ``e ** s`` (same numbers: ``2 ** (s log2 e) = e ** s``);
    * **no max is subtracted**: ``exp(s)`` directly, the row sums (a matrix-vector product with ones, faster
      than a reduction) and ``exp(s) @ v`` accumulated over key blocks, the normalisation applied to the
      ``[queries, d]`` output. Softmax is shift-invariant, so this
      is the same mathematics as subtracting the max, with two fewer passes over the scores and no
      rescaling between key blocks. It is exact to float32 rounding whenever the row sum lies in
      :data:`SAFE_SUM_RANGE` (no term overflowed, the largest is a normal float) and the output is finite;
      a chunk with any other row (a score above ~80, all scores below ~-60, a large ``v``, a NaN) is
      recomputed by :func:`online_softmax_attention`, the max-subtracting form.

    The float32 roundings differ from transformers' order by about 1e-7 relative.
    """
    xp = array_namespace(q, k, v)
    n, heads, d = q.shape
    q = q * (scale * LOG2_E)  # base-2 scores
    outputs = []
    for g in plan.groups:
        L, G = g.length, g.count
        kb = L if key_block is None else max(1, min(L, key_block))

        def gather(x):
            rows = x[g.start:g.start + G * L, ...] if g.rows is None else xp.take(x, g.rows, axis=0)
            return xp.permute_dims(xp.reshape(rows, (G, L, heads, d)), (0, 2, 1, 3))  # [G, heads, L, d]

        qg, kg, vg = gather(q), gather(k), gather(v)
        kt = xp.permute_dims(kg, (0, 1, 3, 2))  # [G, heads, d, L]
        # chunking: one row of a score tile costs heads * kb * 4 bytes
        rows_per_chunk = max(1, chunk_bytes // (heads * kb * 4))
        seg_chunk = max(1, rows_per_chunk // L)
        q_chunk = L if rows_per_chunk >= L else rows_per_chunk
        out_g = []
        for s0 in range(0, G, seg_chunk):
            s1 = min(G, s0 + seg_chunk)
            kts, vs = kt[s0:s1, ...], vg[s0:s1, ...]
            parts = []
            for q0 in range(0, L, q_chunk):
                qc = qg[s0:s1, :, q0:min(L, q0 + q_chunk), :]  # [g, h, c, d]
                with np.errstate(over="ignore", invalid="ignore"):  # such rows are caught below
                    out, denominator = _max_free_softmax_v(qc, kts, vs, kb)
                if not _max_free_ok(out, denominator):
                    out = online_softmax_attention(qc, kts, vs, kb)  # large, tiny or non-finite scores
                else:
                    out /= denominator
                parts.append(out)
            out_g.append(parts[0] if len(parts) == 1 else xp.concat(parts, axis=2))
        out = out_g[0] if len(out_g) == 1 else xp.concat(out_g, axis=0)  # [G, heads, L, d]
        outputs.append(xp.reshape(xp.permute_dims(out, (0, 2, 1, 3)), (G * L, heads, d)))
    out = outputs[0] if len(outputs) == 1 else xp.concat(outputs, axis=0)
    if plan.inverse is not None:
        out = xp.take(out, plan.inverse, axis=0)
    return out


def _max_free_softmax_v(q, kt, v, key_block: int):
    """``2 ** (q kt) @ v`` and the row sums of ``2 ** (q kt)``, accumulated over key blocks (q already scaled, base
    2)."""
    xp = array_namespace(q, kt, v)
    out = denominator = None
    ones = xp.ones((min(key_block, kt.shape[-1]), 1), dtype=q.dtype, device=q.device)
    for k0 in range(0, kt.shape[-1], key_block):
        e = exp2_(q @ kt[..., k0:k0 + key_block])  # [g, h, c, d] @ [g, h, d, kb] -> [g, h, c, kb]
        row_sums = e @ ones[:e.shape[-1], :]  # [g, h, c, 1]
        pv = e @ v[..., k0:k0 + key_block, :]  # [g, h, c, kb] @ [g, h, kb, d] -> [g, h, c, d]
        if out is None:
            out, denominator = pv, row_sums
        else:
            out += pv
            denominator += row_sums
    return out, denominator


def _max_free_ok(out, denominator) -> bool:
    """Whether a tile's max-free result may be kept: every row sum in :data:`SAFE_SUM_RANGE` and the
    ``[queries, d]`` output finite (a check on ``d`` numbers per query, not on the scores)."""
    xp = array_namespace(out, denominator)
    lo, hi = SAFE_SUM_RANGE
    return bool(xp.all((denominator >= lo) & (denominator <= hi))) and bool(xp.all(xp.isfinite(out)))


def online_softmax_attention(q, kt, v, key_block: int):
    """``softmax(q kt) v`` over key blocks with the max subtracted, ``q [..., c, d]``, ``kt [..., d, L]``,
    ``v [..., L, d]`` (q already scaled, base 2: the scores are exponentiated with ``2 **``): the online softmax
    of FlashAttention. The running row max ``m`` grows
    block by block; when it does, what was accumulated so far is rescaled by ``exp(m_old - m_new)``. Used by
    :func:`segment_attention` for the rare chunks whose scores the max-free form cannot take."""
    xp = array_namespace(q, kt, v)
    L = kt.shape[-1]
    m = out = denominator = None
    for k0 in range(0, L, key_block):
        s = q @ kt[..., k0:k0 + key_block]  # [..., c, kb]
        m_new = xp.max(s, axis=-1, keepdims=True)
        if m is not None:
            m_new = xp.maximum(m, m_new)
        s -= m_new
        e = exp2_(s)
        pv = e @ v[..., k0:k0 + key_block, :]
        row_sums = xp.sum(e, axis=-1, keepdims=True)
        if m is None:
            out, denominator = pv, row_sums
        else:
            rescale = exp2_(m - m_new)  # <= 1
            out = out * rescale + pv
            denominator = denominator * rescale + row_sums
        m = m_new
    return out / denominator


def parallel_segment_attention(q, k, v, plan: SegmentPlan, scale: float, chunk_bytes: int = DEFAULT_CHUNK_BYTES):
    """:func:`segment_attention` with the heads split over CPU threads (NumPy only).

    NumPy's elementwise passes (exp and the row sums of the softmax) run on one core while the matmuls use
    all of them; splitting the heads over the cores, each part with a single-threaded BLAS, keeps every
    core busy through the softmax too. Heads are independent, so the result is the same. Each thread works
    on score tiles of at most ``PART_CHUNK_BYTES`` with :data:`CPU_KEY_BLOCK` keys, small enough to stay in
    its core's cache between the matmul that writes a tile, the exponential and the matmul that reads it.
    """
    xp = array_namespace(q)
    n_cores, heads = cores(), q.shape[1]
    if n_cores < 2 or heads < 2 or not is_numpy_namespace(xp):
        return segment_attention(q, k, v, plan, scale, chunk_bytes)
    # one head per part; the parts run side by side, so together they stay within chunk_bytes
    part_bytes = max(1, min(chunk_bytes // n_cores, PART_CHUNK_BYTES))
    parts = run_parts(lambda a, b: segment_attention(q[:, a:b], k[:, a:b], v[:, a:b], plan, scale, part_bytes,
                                                     CPU_KEY_BLOCK),
                      split_bounds(heads, heads))
    return parallel_concat(parts, axis=1)
