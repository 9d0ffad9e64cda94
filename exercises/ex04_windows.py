"""Exercises 04 · the window index (notebooks/04_window_index.ipynb).

Write each function, then check it:  python -m exercises 04
Solutions: exercises/solutions/ex04_windows.py (try first!)
"""



def cu_seqlens(grids):
    """grids: a list of (t, h, w). Return int [segments + 1]: the cumulative boundaries of the attention
    segments, one segment of h*w patch rows per frame pair of each entry, starting with 0."""
    raise NotImplementedError


def window_index(grids):
    """grids: a list of (t, h, w) (window 112 px, patch 14, merge 2: windows of 4x4 merged tokens).
    Return (window_index, cu_window_seqlens) as transformers' get_vision_window_index does for the
    whole batch: indices of merged tokens offset by the entries before, boundaries in patch rows."""
    raise NotImplementedError
