"""``grid_thw``: the (t, h, w) patch grid of every image and video, checked once.

Explained in ``notebooks/01_preprocessing.ipynb``.
"""

from __future__ import annotations

import numpy as np

from .errors import InputError


def as_grid_thw(grid_thw, spatial_merge_size: int = 2) -> np.ndarray:
    """Validate ``grid_thw`` and return it as a host ``int64 [k, 3]`` array.

    Each row is (t, h, w) in patch units: t temporal groups (frame pairs), h x w patches of 14 px.
    h and w must be multiples of ``spatial_merge_size`` (the 2x2 merge), every entry positive.
    """
    try:
        grid = np.asarray(grid_thw)
    except Exception as exc:  # e.g. a CuPy array: indices are host metadata
        raise InputError(f"grid_thw must be host data (a list, tuple or NumPy array), got "
                         f"{type(grid_thw).__name__}: {exc}") from None
    if grid.ndim == 1 and grid.shape[0] == 3:
        grid = grid[None]
    if grid.ndim != 2 or grid.shape[1] != 3 or grid.shape[0] == 0:
        raise InputError(f"grid_thw must have shape [k, 3] (one (t, h, w) row per image or video), got "
                         f"{list(grid.shape)}")
    if grid.dtype.kind == "f":
        if not np.all(np.isfinite(grid)) or np.any(grid != np.round(grid)):
            raise InputError(f"grid_thw must hold integers, got {grid.tolist()}")
    elif grid.dtype.kind not in "iu":
        raise InputError(f"grid_thw must hold integers, got dtype {grid.dtype}")
    grid = grid.astype(np.int64)
    if np.any(grid <= 0):
        raise InputError(f"grid_thw entries must be positive, got {grid.tolist()}")
    odd = grid[(grid[:, 1] % spatial_merge_size != 0) | (grid[:, 2] % spatial_merge_size != 0)]
    if len(odd):
        raise InputError(f"grid h and w must be multiples of spatial_merge_size={spatial_merge_size} (the 2x2 merge); "
                         f"got rows {odd.tolist()}. Preprocess with qvlearn.preprocess, which resizes to multiples "
                         f"of 28 px")
    return grid


def num_patches(grid: np.ndarray) -> int:
    return int(np.sum(grid[:, 0] * grid[:, 1] * grid[:, 2]))
