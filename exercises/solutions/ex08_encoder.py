"""Solutions to the exercises 08 · the whole encoder (notebooks/08_whole_encoder.ipynb)."""

import numpy as np


def to_window_order(x, window_index):
    """x: patch rows [N, d] in natural (merge-block) order; window_index: a permutation of the N/4 merged
    tokens. Return the rows in window order, as the tower does before its first block."""
    return x.reshape(len(x) // 4, 4, -1)[window_index].reshape(len(x), -1)


def from_window_order(tokens, window_index):
    """tokens: the merger's output [N/4, out] in window order. Return them in natural order."""
    return tokens[np.argsort(window_index)]
