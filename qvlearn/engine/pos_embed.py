"""Qwen3-VL / Qwen3.5: the learned absolute position table, interpolated to each image's grid.

Explained in ``notebooks/13_qwen3_vl.ipynb``.

The table is ``side x side`` learned vectors (48 x 48 = 2304 as released). For an image of ``h x w``
patches transformers samples it **bilinearly with the corners aligned** (``F.interpolate(...,
align_corners=True)``): patch row ``r`` reads table row ``r * (side - 1) / (h - 1)`` (0 for ``h = 1``), the same
for columns, mixing the 4 surrounding entries with weights ``(1 - dy)(1 - dx), (1 - dy) dx, dy (1 - dx), dy dx``.
The result is laid out like ``pixel_values`` (2x2 merge-block order), repeated for every frame pair, and
added to the patch embeddings. Everything is float32, as in transformers'
``get_vision_interpolation_indices_and_weights``:
a port that indexes the table directly (llama.cpp's first port), or uses ``align_corners=False``, or interpolates
in raster order and forgets the merge-block order, gets other vectors.
"""

from __future__ import annotations

import numpy as np
from array_api_compat import array_namespace

from ..grid import as_grid_thw
from .rotary import rotary_position_ids


def _axis_taps(index: np.ndarray, size: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """Per patch: the 2 table positions along one axis and their weights (float32, corners aligned)."""
    index = index.astype(np.float32)
    denominator = np.maximum(size - 1, 1).astype(np.float32)
    source = index * np.float32(side - 1) / denominator                # [N] float32, in table units
    floor = np.floor(source)
    taps = floor.astype(np.int64)[:, None] + np.arange(2)               # [N, 2]: floor, floor + 1
    distance = np.abs(source[:, None] - floor[:, None] - np.arange(2, dtype=np.float32))
    weights = np.maximum(np.float32(1) - distance, np.float32(0)).astype(np.float32)
    return np.clip(taps, 0, side - 1), weights


def interpolation_indices_and_weights(grid_thw, side: int, spatial_merge_size: int = 2):
    """Host ``(indices int64 [N, 4], weights float32 [N, 4])``: the 4 table entries each patch mixes, in
    ``pixel_values`` order (merge-block order, repeated over frame pairs)."""
    grid = as_grid_thw(grid_thw, spatial_merge_size)
    ids = rotary_position_ids(grid, spatial_merge_size)                 # [N, 2] (row, col), the same order
    sizes = np.repeat(grid[:, 1:], grid.prod(axis=1), axis=0)           # [N, 2] (h, w) of each patch's image
    row_taps, row_w = _axis_taps(ids[:, 0], sizes[:, 0], side)
    col_taps, col_w = _axis_taps(ids[:, 1], sizes[:, 1], side)
    indices = (row_taps[:, :, None] * side + col_taps[:, None, :]).reshape(-1, 4)
    weights = (row_w[:, :, None] * col_w[:, None, :]).reshape(-1, 4)
    return indices, weights


def interpolated_pos_embed(table, indices, weights):
    """``table [side*side, D]`` (backend) -> ``[N, D]``: ``sum_k table[indices[:, k]] * weights[:, k]``, summed
    in transformers' order (k = 0..3)."""
    xp = array_namespace(table)
    out = None
    for k in range(indices.shape[1]):
        term = xp.take(table, indices[:, k], axis=0) * weights[:, k][:, None]
        out = term if out is None else out + term
    return out
