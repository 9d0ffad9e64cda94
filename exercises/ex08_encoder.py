"""Exercises 08 · the whole encoder (notebooks/08_whole_encoder.ipynb).

Write each function, then check it:  python -m exercises 08
Solutions: exercises/solutions/ex08_encoder.py (try first!)
"""



def to_window_order(x, window_index):
    """x: patch rows [N, d] in natural (merge-block) order; window_index: a permutation of the N/4 merged
    tokens. Return the rows in window order, as the tower does before its first block."""
    raise NotImplementedError


def from_window_order(tokens, window_index):
    """tokens: the merger's output [N/4, out] in window order. Return them in natural order."""
    raise NotImplementedError
