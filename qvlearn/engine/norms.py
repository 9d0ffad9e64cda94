"""LayerNorm (Qwen2-VL) and RMSNorm (Qwen2.5-VL), eps 1e-6, over the last axis.

Explained in ``notebooks/05_norms_and_activations.ipynb``.
"""

from __future__ import annotations

from array_api_compat import array_namespace


def layer_norm(x, weight, bias, eps: float = 1e-6):
    """``(x - mean) / sqrt(var + eps) * weight + bias``; biased variance, as ``torch.nn.LayerNorm``."""
    xp = array_namespace(x)
    mean = xp.mean(x, axis=-1, keepdims=True)  # [N, 1]
    centred = x - mean
    var = xp.mean(centred * centred, axis=-1, keepdims=True)  # [N, 1]
    return centred / xp.sqrt(var + eps) * weight + bias


def rms_norm(x, weight, eps: float = 1e-6):
    """``x / sqrt(mean(x^2) + eps) * weight``: no mean subtraction, no bias. The reduction is done in
    float32 and the gain is applied after the cast back (a no-op for our float32 activations)."""
    xp = array_namespace(x)
    variance = xp.mean(x * x, axis=-1, keepdims=True)  # [N, 1]
    return x * (1.0 / xp.sqrt(variance + eps)) * weight
