"""Attention segments: ``cu_seqlens`` (full attention) and the window partition of Qwen2.5-VL.

Explained in ``notebooks/04_window_index.ipynb``. All host-side NumPy integer work.

* ``cu_seqlens``: one segment per temporal group of each image/video -> h*w repeated t times,
  cumulative, with a leading 0. Patches never attend across images or frame pairs.
* ``window_index``: on each merged grid (t, h/2, w/2), windows of ``window_size // merge // patch``
  (112 // 2 // 14 = 4) merged tokens per side. Pad bottom/right with -100 by ``4 - H % 4`` (a whole
  empty window row/column when H already divides), cut into windows, read windows in raster order and
  tokens in raster order inside each window, drop the padding. The result is a permutation of the
  merged-token ids.
* ``cu_window_seqlens``: cumulative window sizes in patches (x4), with empty windows removed
  (``unique_consecutive``).
"""

from __future__ import annotations

import numpy as np

from ..grid import as_grid_thw

PAD = -100  # the sentinel transformers pads with


def cu_seqlens(grid_thw, spatial_merge_size: int = 2) -> np.ndarray:
    """Host ``int32 [segments + 1]``: full-attention segment boundaries in patches."""
    grid = as_grid_thw(grid_thw, spatial_merge_size)
    seqlens = np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0])  # h*w, t times per entry
    return np.concatenate([[0], np.cumsum(seqlens)]).astype(np.int32)


def window_index(grid_thw, spatial_merge_size: int = 2, window_size: int = 112, patch_size: int = 14):
    """Host ``(window_index int64 [N/4], cu_window_seqlens int32 [windows + 1])``."""
    grid = as_grid_thw(grid_thw, spatial_merge_size)
    ws = window_size // spatial_merge_size // patch_size  # window side in merged tokens
    unit = spatial_merge_size ** 2  # patches per merged token
    index_parts, cu = [], [np.zeros(1, np.int64)]
    offset = 0
    for t, h, w in grid.tolist():
        gh, gw = h // spatial_merge_size, w // spatial_merge_size  # merged grid
        pad_h, pad_w = ws - gh % ws, ws - gw % ws  # note: ws, not 0, when already divisible
        nh, nw = (gh + pad_h) // ws, (gw + pad_w) // ws
        padded = np.full((t, gh + pad_h, gw + pad_w), PAD, dtype=np.int64)
        padded[:, :gh, :gw] = np.arange(t * gh * gw).reshape(t, gh, gw)
        # (t, nh, ws, nw, ws) -> (t, nh, nw, ws, ws): windows in raster order, tokens raster inside
        windows = padded.reshape(t, nh, ws, nw, ws).transpose(0, 1, 3, 2, 4).reshape(t * nh * nw, ws * ws)
        valid = windows != PAD
        index_parts.append(windows[valid] + offset)
        cu.append(np.cumsum(valid.sum(axis=1)) * unit + cu[-1][-1])
        offset += t * gh * gw
    cu_window = np.concatenate(cu)
    keep = np.concatenate([[True], np.diff(cu_window) != 0])  # unique_consecutive: drop empty windows
    return np.concatenate(index_parts), cu_window[keep].astype(np.int32)


def inverse_permutation(index: np.ndarray) -> np.ndarray:
    """``argsort(window_index)``: puts window-ordered rows back in natural order."""
    inverse = np.empty_like(index)
    inverse[index] = np.arange(len(index), dtype=index.dtype)
    return inverse


def patch_permutation(window_index: np.ndarray, spatial_merge_size: int = 2) -> np.ndarray:
    """The window permutation on patch rows: merged token ``i`` carries its ``merge**2`` patches."""
    unit = spatial_merge_size ** 2
    return (window_index[:, None] * unit + np.arange(unit)).reshape(-1)
