"""my_encoder.windows: functions kept from a notebook by qvlearn.tools.course.keep. Edit them in the notebook
and run its cells again; this file is rewritten."""


import numpy as np

PAD = -100  # transformers' filler in the padded window grid


def cu_seqlens(grid_thw):                          # one segment of h*w patch rows per frame pair, cumulated
    lengths = np.concatenate([np.full(t, h * w) for t, h, w in grid_thw])
    return np.concatenate([[0], np.cumsum(lengths)])


def window_index(grid_thw, window_size=112, patch_size=14, merge=2):
    """The steps above for every (t, h, w): merged tokens in window order [N/4], and cu_window_seqlens."""
    ws = window_size // merge // patch_size                          # window side in merged tokens (4)
    index, cu, offset = [], [0], 0
    for t, h, w in grid_thw:
        gh, gw = h // merge, w // merge
        pad_h, pad_w = ws - gh % ws, ws - gw % ws                    # ws, not 0, when it already divides
        padded = np.full((t, gh + pad_h, gw + pad_w), PAD)
        padded[:, :gh, :gw] = np.arange(t * gh * gw).reshape(t, gh, gw)
        nh, nw = padded.shape[1] // ws, padded.shape[2] // ws
        windows = padded.reshape(t, nh, ws, nw, ws).transpose(0, 1, 3, 2, 4).reshape(t * nh * nw, ws * ws)
        valid = windows != PAD
        index.append(windows[valid] + offset)                         # ids continue across images
        cu.extend(cu[-1] + np.cumsum(valid.sum(1)) * merge ** 2)      # in patch rows
        offset += t * gh * gw
    cu = np.array(cu)
    return np.concatenate(index), cu[np.concatenate([[True], np.diff(cu) != 0])]   # unique_consecutive


def patch_permutation(window_index, merge=2):     # merged token i carries its merge² patch rows
    unit = merge ** 2
    return (window_index[:, None] * unit + np.arange(unit)).reshape(-1)


def inverse_permutation(index):                   # index[inverse] = 0, 1, 2, ...: back to natural order
    inverse = np.empty_like(index)
    inverse[index] = np.arange(len(index))
    return inverse
