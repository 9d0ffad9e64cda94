"""Exercises 07 · the merger (notebooks/07_merger.ipynb).

Write each function, then check it:  python -m exercises 07
Solutions: exercises/solutions/ex07_merger.py (try first!)
"""




def raster_to_merge_order(x, h, w):
    """x: [h*w, d], one row per patch of an h x w grid in raster order (row by row). Return the rows in
    the order transformers uses (2x2 merge-block order), so 4 consecutive rows are one block."""
    raise NotImplementedError


def patch_merger(x, ln_q_weight, mlp_0_weight, mlp_0_bias, mlp_2_weight, mlp_2_bias):
    """Qwen2.5-VL's merger: x [N, width] in merge-block order -> [N/4, out]. RMSNorm (eps 1e-6) with
    ln_q_weight, concatenate each 4 consecutive rows, mlp_0, exact GELU, mlp_2 (Linear weights [out, in])."""
    raise NotImplementedError
