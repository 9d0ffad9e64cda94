"""Solutions to the exercises 01 · preprocessing (notebooks/01_preprocessing.ipynb)."""

import math

import numpy as np


def first_c_rounding_mismatch():
    """The smallest n for which an n x n image gets a different token count when smart_resize rounds
    n / 28 like C's round() (halves away from zero) instead of Python's round() (halves to even).
    Return an int. Hint: qvlearn.smart_resize is the reference rule; write the C-style variant."""
    import qvlearn

    def c_style(n):
        side = max(28, math.floor(n / 28 + 0.5) * 28)
        if side * side < 3136:
            side = math.ceil(n * math.sqrt(3136 / (n * n)) / 28) * 28
        return side * side // 784                      # no n below 3000 reaches max_pixels

    for n in range(1, 3000):
        h, w = qvlearn.smart_resize(n, n)
        if h * w // 784 != c_style(n):
            return n


def unpatchify(pixel_values, grid_thw):
    """The inverse of the processor's patchify: rows [h * w, 1176] -> the frame pair [2, 3, 14 h, 14 w]."""
    t, h, w = (int(v) for v in np.asarray(grid_thw).reshape(-1))
    x = np.asarray(pixel_values).reshape(t, h // 2, w // 2, 2, 2, 3, 2, 14, 14)   # (t, bh, bw, ih, iw, C, T, ph, pw)
    x = x.transpose(0, 6, 5, 1, 3, 7, 2, 4, 8)                                   # (t, T, C, bh, ih, ph, bw, iw, pw)
    return x.reshape(2 * t, 3, 14 * h, 14 * w)


def normalize(pixels):
    """pixels: uint8 [H, W, 3]. Return float32 [3, H, W] = (x / 255 - mean) / std with the OpenAI CLIP
    mean (0.48145466, 0.4578275, 0.40821073) and std (0.26862954, 0.26130258, 0.27577711),
    bit-identical to transformers' Qwen2VLImageProcessorPil."""
    x = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)          # rescale in float64, then float32
    mean = np.asarray((0.48145466, 0.4578275, 0.40821073), np.float32)
    std = np.asarray((0.26862954, 0.26130258, 0.27577711), np.float32)
    return np.moveaxis((x - mean) / std, -1, 0)
