"""Patch merger: 2x2 neighbouring patches -> one LLM token, and the output order.

Explained in ``notebooks/07_merger.ipynb``.

``ln_q`` (LayerNorm / RMSNorm over D) -> view ``[N/4, 4D]``: rows already come in 2x2 merge-block
order, so merged vector = ``[tok(0,0) | tok(0,1) | tok(1,0) | tok(1,1)]`` -> ``Linear(4D, 4D)`` ->
exact (erf) GELU -> ``Linear(4D, out_hidden_size)``.

Qwen2.5-VL runs its blocks in window order; after the merger the rows are put back in natural order
with the inverse of ``window_index`` (``argsort``).

Qwen3-VL / Qwen3.5 name the parts ``norm`` (a LayerNorm over D), ``linear_fc1``, ``linear_fc2``. Qwen3-VL's
**DeepStack mergers** take the output of the blocks at ``deepstack_visual_indexes`` and normalise *after* the
2x2 concatenation (a LayerNorm over 4D), then the same MLP (explained in ``notebooks/13_qwen3_vl.ipynb``).
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .layers import gelu, linear
from .norms import layer_norm


def merge_2x2(x, merge_unit: int = 4):
    """``[N, D] -> [N/4, 4D]``: concatenates the 4 patches of each merge block."""
    xp = array_namespace(x)
    n, d = x.shape
    return xp.reshape(x, (n // merge_unit, merge_unit * d))


def merger_mlp(x, mlp0_weight, mlp0_bias, mlp2_weight, mlp2_bias):
    """``[M, 4D] @ [4D, 4D] -> GELU -> [M, 4D] @ [4D, out] -> [M, out]``."""
    return linear(gelu(linear(x, mlp0_weight, mlp0_bias)), mlp2_weight, mlp2_bias)


def restore_order(merged, inverse_window_index):
    """Window order -> natural order: ``merged[argsort(window_index)]``."""
    xp = array_namespace(merged)
    return xp.take(merged, inverse_window_index, axis=0)


def merger_qwen3(x, w: dict, merge_unit: int = 4, eps: float = 1e-6, postshuffle: bool = False):
    """Qwen3-VL / Qwen3.5 merger (``postshuffle=False``: LayerNorm over D, then 2x2 concat) or a DeepStack merger
    (``postshuffle=True``: 2x2 concat, then LayerNorm over 4D); then ``linear_fc1``, exact GELU, ``linear_fc2``.
    ``w`` holds ``norm.weight``, ``norm.bias``, ``linear_fc1.*``, ``linear_fc2.*``."""
    if postshuffle:
        h = layer_norm(merge_2x2(x, merge_unit), w["norm.weight"], w["norm.bias"], eps)
    else:
        h = merge_2x2(layer_norm(x, w["norm.weight"], w["norm.bias"], eps), merge_unit)
    return merger_mlp(h, w["linear_fc1.weight"], w["linear_fc1.bias"], w["linear_fc2.weight"], w["linear_fc2.bias"])
