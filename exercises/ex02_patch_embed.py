"""Exercises 02 · patch embedding (notebooks/02_patch_embed.ipynb).

Write each function, then check it:  python -m exercises 02
Solutions: exercises/solutions/ex02_patch_embed.py (try first!)
"""



def conv3d_as_matmul(rows, weight):
    """rows: [N, 1176] pixel_values rows laid out (C=3, T=2, 14, 14); weight: the Conv3d weight
    [out, 3, 2, 14, 14] (kernel = stride, no bias). Return the embeddings [N, out] with one matmul."""
    raise NotImplementedError


def weight_for_tc_rows(weight):
    """A port lays each row out (T, C, 14, 14) instead of (C, T, 14, 14). Return the [out, 1176]
    matrix M such that rows_tc @ M.T equals the Conv3d's output."""
    raise NotImplementedError
