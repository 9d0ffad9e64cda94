"""Solutions to the exercises 06 · attention (notebooks/06_attention.ipynb)."""

import numpy as np


def segment_attention(q, k, v, cu_seqlens):
    """q, k, v: float32 [N, heads, head_dim]; cu_seqlens: the segment boundaries. Return [N, heads,
    head_dim]: softmax(q k^T / sqrt(head_dim)) v within each segment, per head."""
    out = np.empty_like(q)
    for a, b in zip(cu_seqlens[:-1], cu_seqlens[1:]):
        qs, ks, vs = (z[a:b].transpose(1, 0, 2) for z in (q, k, v))       # [heads, L, d]
        s = qs @ ks.transpose(0, 2, 1) * q.shape[-1] ** -0.5
        p = np.exp(s - s.max(-1, keepdims=True))
        out[a:b] = ((p / p.sum(-1, keepdims=True)) @ vs).transpose(1, 0, 2)
    return out


def chunked_attention(q, k, v, chunk):
    """Full attention (one segment) without ever holding the [heads, N, N] scores: walk the keys in
    blocks of `chunk` with an online softmax (running max, running sum, rescaled accumulator)."""
    qh, kh, vh = (z.transpose(1, 0, 2) for z in (q, k, v))               # [heads, N, d]
    qh = qh * q.shape[-1] ** -0.5
    m = np.full(qh.shape[:2] + (1,), -np.inf, np.float32)
    l = np.zeros_like(m)
    acc = np.zeros_like(qh)
    for a in range(0, kh.shape[1], chunk):
        s = qh @ kh[:, a:a + chunk].transpose(0, 2, 1)                    # [heads, N, chunk]
        m_new = np.maximum(m, s.max(-1, keepdims=True))
        scale, p = np.exp(m - m_new), np.exp(s - m_new)
        l = l * scale + p.sum(-1, keepdims=True)
        acc = acc * scale + p @ vh[:, a:a + chunk]
        m = m_new
    return (acc / l).transpose(1, 0, 2)
