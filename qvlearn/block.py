"""One vision block: pre-norm residual attention and MLP.

Explained in ``notebooks/06_attention.ipynb`` and ``notebooks/05_norms_and_activations.ipynb``.

    x = x + attn(norm1(x))
    x = x + mlp(norm2(x))

Qwen2-VL: LayerNorm (with bias); MLP ``fc2(quick_gelu(fc1(x)))``.
Qwen2.5-VL: RMSNorm (no bias); MLP ``down_proj(silu(gate_proj(x)) * up_proj(x))``, all with biases.
"""

from __future__ import annotations

from .attention import DEFAULT_CHUNK_BYTES, SegmentPlan, attention
from .config import QWEN2_VL, VisionConfig
from .layers import ACTIVATIONS, linear
from .norms import layer_norm, rms_norm


def mlp_qwen2_vl(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, act="quick_gelu"):
    """``[N, D] -> [N, 4D] -> act -> [N, D]``."""
    return linear(ACTIVATIONS[act](linear(x, fc1_weight, fc1_bias)), fc2_weight, fc2_bias)


def mlp_qwen2_5_vl(x, gate_proj_weight, gate_proj_bias, up_proj_weight, up_proj_bias, down_proj_weight,
                   down_proj_bias, act="silu"):
    """``down(act(gate(x)) * up(x))``: ``[N, D] -> 2 x [N, I] -> [N, D]``."""
    hidden = ACTIVATIONS[act](linear(x, gate_proj_weight, gate_proj_bias))  # [N, I]
    hidden *= linear(x, up_proj_weight, up_proj_bias)  # [N, I]
    return linear(hidden, down_proj_weight, down_proj_bias)  # [N, I] @ [I, D] -> [N, D]


def norm(x, w: dict, name: str, cfg: VisionConfig):
    """``name`` is ``norm1``/``norm2``/``ln_q``: LayerNorm for Qwen2-VL, RMSNorm for Qwen2.5-VL."""
    if cfg.family == QWEN2_VL:
        return layer_norm(x, w[f"{name}.weight"], w[f"{name}.bias"], cfg.eps)
    return rms_norm(x, w[f"{name}.weight"], cfg.eps)


def vision_block(x, w: dict, cfg: VisionConfig, cos, sin, plan: SegmentPlan, chunk_bytes=DEFAULT_CHUNK_BYTES):
    """One block. ``w`` maps checkpoint names without the ``visual.blocks.{i}.`` prefix to arrays."""
    x = x + attention(norm(x, w, "norm1", cfg), w["attn.qkv.weight"], w["attn.qkv.bias"], w["attn.proj.weight"],
                      w["attn.proj.bias"], cos, sin, plan, cfg.num_heads, chunk_bytes)
    h = norm(x, w, "norm2", cfg)
    if cfg.family == QWEN2_VL:
        h = mlp_qwen2_vl(h, w["mlp.fc1.weight"], w["mlp.fc1.bias"], w["mlp.fc2.weight"], w["mlp.fc2.bias"],
                         cfg.hidden_act)
    else:
        h = mlp_qwen2_5_vl(h, w["mlp.gate_proj.weight"], w["mlp.gate_proj.bias"], w["mlp.up_proj.weight"],
                           w["mlp.up_proj.bias"], w["mlp.down_proj.weight"], w["mlp.down_proj.bias"],
                           cfg.hidden_act)
    x += h
    return x
