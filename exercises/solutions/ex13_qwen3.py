"""Solutions to the exercises 13 · the third generation (notebooks/13_qwen3_vl.ipynb)."""

import numpy as np
from scipy.special import erf


def position_table_taps(h, w, side):
    def axis(n):
        source = np.arange(n, dtype=np.float32) * np.float32(side - 1) / np.float32(max(n - 1, 1))
        lo = np.floor(source).astype(np.int64)
        frac = (source - lo).astype(np.float32)
        return lo, np.minimum(lo + 1, side - 1), frac

    r0, r1, dr = axis(h)
    c0, c1, dc = axis(w)
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    rows, cols = rows.reshape(-1), cols.reshape(-1)
    idx = np.stack([r0[rows] * side + c0[cols], r0[rows] * side + c1[cols],
                    r1[rows] * side + c0[cols], r1[rows] * side + c1[cols]], axis=1)
    y, x = dr[rows], dc[cols]
    wts = np.stack([(1 - y) * (1 - x), (1 - y) * x, y * (1 - x), y * x], axis=1).astype(np.float32)
    return idx, wts


def interleaved_mrope_rows(mrope_section, head_dim=128):
    rows = np.zeros(head_dim // 2, dtype=np.int64)
    for row in (1, 2):
        rows[row: 3 * mrope_section[row]: 3] = row
    return rows


def deepstack_merger(x, weights, eps=1e-6):
    m = x.reshape(len(x) // 4, 4 * x.shape[1])                            # 2x2 concat first ...
    mean = m.mean(-1, keepdims=True)
    var = ((m - mean) ** 2).mean(-1, keepdims=True)
    m = (m - mean) / np.sqrt(var + eps) * weights["norm.weight"] + weights["norm.bias"]   # ... then the norm
    h = m @ weights["linear_fc1.weight"].T + weights["linear_fc1.bias"]
    h = 0.5 * h * (1 + erf(h / np.sqrt(2)))                               # exact GELU
    return h @ weights["linear_fc2.weight"].T + weights["linear_fc2.bias"]
