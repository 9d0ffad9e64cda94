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
The engine's merger, for every family and the DeepStack mergers, is :func:`qvlearn.engine.block.merger`.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .layers import gelu, linear


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
