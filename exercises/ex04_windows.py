"""Exercises 04 · the window index (notebooks/04_window_index.ipynb).

Write each function, then check it:  python -m exercises 04
Solutions: exercises/solutions/ex04_windows.py (try first!)
"""



def cu_seqlens(grids):
    """grids: a list of (t, h, w). Return int [segments + 1]: the cumulative boundaries of the attention
    segments, one segment of h*w patch rows per frame pair of each entry, starting with 0."""
    raise NotImplementedError


def window_index(grids, window_size=112):
    """grids: a list of (t, h, w) images (t = 1) in patches; ``window_size`` in pixels (112 as released; the
    checker also asks for 224). Return (window_index, cu_window_seqlens) for the whole batch, as transformers'
    get_vision_window_index (14-px patches, 2x2 merge)."""
    raise NotImplementedError