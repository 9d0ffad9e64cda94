"""Solutions to the exercises 05 · norms and activations (notebooks/05_norms_and_activations.ipynb)."""

import numpy as np


def rms_norm_sharded(shards, weight_shards, eps=1e-6):
    width = sum(s.shape[-1] for s in shards)
    total = sum((s.astype(np.float32) ** 2).sum(-1, keepdims=True) for s in shards)   # the all-reduce
    scale = 1.0 / np.sqrt(total / np.float32(width) + np.float32(eps))                # the mean over all D
    return [(s * scale).astype(np.float32) * w for s, w in zip(shards, weight_shards)]


def quick_gelu(x):
    """Qwen2-VL's activation in its vision MLP (hidden_act "quick_gelu")."""
    return x / (1 + np.exp(-1.702 * x))


def swiglu_mlp(x, gate_proj_weight, gate_proj_bias, up_proj_weight, up_proj_bias, down_proj_weight, down_proj_bias):
    """Qwen2.5-VL's vision MLP with SiLU. Weights are stored like torch's Linear: [out, in]."""
    silu = lambda v: v / (1 + np.exp(-v))
    gate = x @ gate_proj_weight.T + gate_proj_bias
    up = x @ up_proj_weight.T + up_proj_bias
    return (silu(gate) * up) @ down_proj_weight.T + down_proj_bias
