"""Solutions to the exercises 07 · the merger (notebooks/07_merger.ipynb)."""

import math

import numpy as np


def raster_to_merge_order(x, h, w):
    """x: [h*w, d], one row per patch of an h x w grid in raster order (row by row). Return the rows in
    the order transformers uses (2x2 merge-block order), so 4 consecutive rows are one block."""
    d = x.shape[-1]
    return x.reshape(h // 2, 2, w // 2, 2, d).transpose(0, 2, 1, 3, 4).reshape(h * w, d)


def patch_merger(x, ln_q_weight, mlp_0_weight, mlp_0_bias, mlp_2_weight, mlp_2_bias):
    """Qwen2.5-VL's merger: x [N, width] in merge-block order -> [N/4, out]. RMSNorm (eps 1e-6) with
    ln_q_weight, concatenate each 4 consecutive rows, mlp_0, exact GELU, mlp_2 (Linear weights [out, in])."""
    erf = np.vectorize(math.erf)
    h = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * ln_q_weight
    h = h.reshape(-1, 4 * x.shape[-1]) @ mlp_0_weight.T + mlp_0_bias
    h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
    return h @ mlp_2_weight.T + mlp_2_bias
