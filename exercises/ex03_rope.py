"""Exercises 03 · 2-D RoPE (notebooks/03_rope_2d.ipynb).

Write each function, then check it:  python -m exercises 03
Solutions: exercises/solutions/ex03_rope.py (try first!)
"""



def rope_position_ids(h, w):
    """The (row, col) of every patch of a 1 x h x w grid (h, w even), in the order of pixel_values
    (2x2 merge-block order). Return int [h*w, 2]."""
    raise NotImplementedError


def interleave_permutation(head_dim):
    """The reference rotates channel pairs (i, i + head_dim/2) by angle i (rotate_half); a port rotates
    pairs (2i, 2i + 1) (interleaved). Return a permutation p of range(head_dim) such that the port,
    given the q and k weight rows W[p] of one head, computes the same attention scores."""
    raise NotImplementedError
