"""Solutions to the exercises 06 · attention (notebooks/06_attention.ipynb)."""

import numpy as np


def padded_batch_attention(q, k, v, cu_seqlens):
    cu = np.asarray(cu_seqlens)
    lengths = np.diff(cu)
    S, L, (_, heads, d) = len(lengths), int(lengths.max()), q.shape
    batch = [np.zeros((S, L, heads, d), np.float32) for _ in range(3)]
    for i, (a, b) in enumerate(zip(cu[:-1], cu[1:])):
        for pad, t in zip(batch, (q, k, v)):
            pad[i, : b - a] = t[a:b]
    qb, kb, vb = (t.transpose(0, 2, 1, 3) for t in batch)                  # [S, heads, L, d]
    scores = qb @ kb.transpose(0, 1, 3, 2) * d ** -0.5                      # [S, heads, L, L]
    scores = np.where((np.arange(L)[None, :] < lengths[:, None])[:, None, None, :], scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    out = (p / p.sum(-1, keepdims=True)) @ vb                              # [S, heads, L, d]
    return np.concatenate([out[i, :, :length].transpose(1, 0, 2) for i, length in enumerate(lengths)])


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
