"""Exercises 05 · norms and activations (notebooks/05_norms_and_activations.ipynb).

Write each function, then check it:  python -m exercises 05
Solutions: exercises/solutions/ex05_norms.py (try first!)
"""



def rms_norm_sharded(shards, weight_shards, eps=1e-6):
    """RMSNorm (Qwen2.5-VL's, eps inside the root) when the channels of every row are split over devices, as a
    tensor-parallel port splits them: ``shards`` a list of float32 [n, D_i] (the D channels, in order),
    ``weight_shards`` the matching pieces of the gain. Return the normalised shards, each [n, D_i], with each
    device using only its own shard plus one number per row from the others."""
    raise NotImplementedError


def quick_gelu(x):
    """Qwen2-VL's activation in its vision MLP (hidden_act "quick_gelu")."""
    raise NotImplementedError


def swiglu_mlp(x, gate_proj_weight, gate_proj_bias, up_proj_weight, up_proj_bias, down_proj_weight, down_proj_bias):
    """Qwen2.5-VL's vision MLP with SiLU. Weights are stored like torch's Linear: [out, in]."""
    raise NotImplementedError
