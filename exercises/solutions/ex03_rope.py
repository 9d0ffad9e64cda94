"""Solutions to the exercises 03 · 2-D RoPE (notebooks/03_rope_2d.ipynb)."""

import numpy as np


def rope_position_ids(h, w):
    """The (row, col) of every patch of a 1 x h x w grid (h, w even), in the order of pixel_values
    (2x2 merge-block order). Return int [h*w, 2]."""
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    blocks = lambda a: a.reshape(h // 2, 2, w // 2, 2).transpose(0, 2, 1, 3).reshape(-1)
    return np.stack([blocks(rows), blocks(cols)], axis=-1)


def interleave_permutation(head_dim):
    """The reference rotates channel pairs (i, i + head_dim/2) by angle i (rotate_half); a port rotates
    pairs (2i, 2i + 1) (interleaved). Return a permutation p of range(head_dim) such that the port,
    given the q and k weight rows W[p] of one head, computes the same attention scores."""
    p = np.empty(head_dim, dtype=int)
    p[0::2] = np.arange(head_dim // 2)                 # reference channel i           -> port channel 2i
    p[1::2] = np.arange(head_dim // 2) + head_dim // 2  # reference channel i + d/2     -> port channel 2i + 1
    return p
