"""Solutions to the exercises 04 · the window index (notebooks/04_window_index.ipynb)."""

import numpy as np


def cu_seqlens(grids):
    """grids: a list of (t, h, w). Return int [segments + 1]: the cumulative boundaries of the attention
    segments, one segment of h*w patch rows per frame pair of each entry, starting with 0."""
    lengths = [h * w for t, h, w in grids for _ in range(t)]
    return np.concatenate([[0], np.cumsum(lengths)])


def window_index(grids, window_size=112):
    """grids: a list of (t, h, w); ``window_size`` px (patch 14, merge 2: windows of window_size // 28 merged
    tokens a side). Return (window_index, cu_window_seqlens) as transformers' get_vision_window_index does for the
    whole batch: indices of merged tokens offset by the entries before, boundaries in patch rows."""
    ws = window_size // 2 // 14
    index, cu, offset = [], [0], 0
    for t, h, w in grids:
        gh, gw = h // 2, w // 2
        ids = np.arange(t * gh * gw).reshape(t, gh, gw)
        ph, pw = ws - gh % ws, ws - gw % ws                # transformers pads a whole window even when it divides
        padded = np.full((t, gh + ph, gw + pw), -100)
        padded[:, :gh, :gw] = ids
        nh, nw = (gh + ph) // ws, (gw + pw) // ws
        windows = padded.reshape(t, nh, ws, nw, ws).transpose(0, 1, 3, 2, 4).reshape(-1, ws * ws)
        for win in windows:
            real = win[win != -100]
            if len(real):
                index.extend(real + offset)
                cu.append(cu[-1] + 4 * len(real))
        offset += t * gh * gw
    return np.array(index), np.array(cu)
