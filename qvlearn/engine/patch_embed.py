"""Patch embedding: a Conv3d whose kernel equals its stride equals the whole input, i.e. one matmul.

Explained in ``notebooks/02_patch_embed.ipynb``.

``proj`` is ``Conv3d(3, D, kernel=stride=(2, 14, 14), bias=False)``. Each ``pixel_values`` row is one
flattened Conv3d input of shape (C, T, 14, 14), so the convolution is
``pixel_values [N, 1176] @ W.reshape(D, 1176).T -> [N, D]``.
"""

from __future__ import annotations


def conv3d_weight_as_matrix(weight):
    """``(D, C, T, P, P)`` Conv3d kernel -> ``(D, C*T*P*P)`` matrix (a view: C-order flattening matches
    the row layout of ``pixel_values``)."""
    return weight.reshape(weight.shape[0], -1)


def patch_embed(pixel_values, proj_weight):
    """``[N, 1176] @ [1176, D] -> [N, D]``; ``proj_weight`` is the ``(D, 1176)`` matrix."""
    return pixel_values @ proj_weight.T
