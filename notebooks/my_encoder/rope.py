"""my_encoder.rope: functions kept from a notebook by qvlearn.tools.course.keep. Edit them in the notebook
and run its cells again; this file is rewritten."""


import numpy as np


def inv_freq(head_dim=80, theta=10000.0):
    dim = head_dim // 2                                      # "axial": frequencies over head_dim / 2 = 40
    return (1.0 / theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim)).astype(np.float32)   # 20 values


def rotary_position_ids(grid_thw):                     # (row, col) of every patch, in merge-block order: [N, 2]
    ids = []
    for t, h, w in grid_thw:
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")        # [h, w] each
        rows = rows.reshape(h // 2, 2, w // 2, 2).transpose(0, 2, 1, 3).reshape(-1)  # (h/2, w/2, 2, 2): 2x2 blocks
        cols = cols.reshape(h // 2, 2, w // 2, 2).transpose(0, 2, 1, 3).reshape(-1)
        ids.append(np.tile(np.stack([rows, cols], axis=1), (t, 1)))              # repeated per frame pair
    return np.concatenate(ids)


def rotary_cos_sin(position_ids, freqs):                 # position_ids [N, 2] (row, col), freqs [d/4]
    pos = position_ids.astype(np.float32)
    angles = np.concatenate([pos[:, :1] * freqs, pos[:, 1:] * freqs], axis=1).astype(np.float32)  # [N, 40]
    emb = np.concatenate([angles, angles], axis=1)                                               # [N, 80]
    return np.cos(emb), np.sin(emb)


def rotate_half(x):                                  # [x1 | x2] -> [-x2 | x1], halves of 40
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def apply_rotary(x, cos, sin):                       # x [N, heads, 80]; cos/sin broadcast over heads
    return x * cos[:, None, :] + rotate_half(x) * sin[:, None, :]
