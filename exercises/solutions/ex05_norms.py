"""Solutions to the exercises 05 · norms and activations (notebooks/05_norms_and_activations.ipynb)."""

import numpy as np


def rms_norm(x, weight, eps=1e-6):
    """RMSNorm over the last axis, as Qwen2.5-VL's vision blocks: return float32 like x."""
    x64 = x.astype(np.float32)
    return (x64 / np.sqrt((x64 * x64).mean(-1, keepdims=True) + eps) * weight).astype(x.dtype)


def quick_gelu(x):
    """Qwen2-VL's activation in its vision MLP (hidden_act "quick_gelu")."""
    return x / (1 + np.exp(-1.702 * x))


def swiglu_mlp(x, gate_proj_weight, gate_proj_bias, up_proj_weight, up_proj_bias, down_proj_weight, down_proj_bias):
    """Qwen2.5-VL's vision MLP with SiLU. Weights are stored like torch's Linear: [out, in]."""
    silu = lambda v: v / (1 + np.exp(-v))
    gate = x @ gate_proj_weight.T + gate_proj_bias
    up = x @ up_proj_weight.T + up_proj_bias
    return (silu(gate) * up) @ down_proj_weight.T + down_proj_bias
