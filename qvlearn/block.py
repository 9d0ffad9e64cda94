"""One vision block: pre-norm residual attention and MLP.

Explained in ``notebooks/06_attention.ipynb`` and ``notebooks/05_norms_and_activations.ipynb``.

    x = x + attn(norm1(x))
    x = x + mlp(norm2(x))

Qwen2-VL: LayerNorm (with bias); MLP ``fc2(quick_gelu(fc1(x)))``.
Qwen2.5-VL: RMSNorm (no bias); MLP ``down_proj(silu(gate_proj(x)) * up_proj(x))``, all with biases.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .attention import DEFAULT_CHUNK_BYTES, SegmentPlan, parallel_segment_attention, qkv_rotary
from .config import QWEN2_VL, VisionConfig
from .layers import ACTIVATIONS, linear
from .norms import layer_norm, rms_norm
from .parallel import row_parallel


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


def mlp(x, w: dict, cfg: VisionConfig):
    """The block's MLP, by family."""
    if cfg.family == QWEN2_VL:
        return mlp_qwen2_vl(x, w["mlp.fc1.weight"], w["mlp.fc1.bias"], w["mlp.fc2.weight"], w["mlp.fc2.bias"],
                            cfg.hidden_act)
    return mlp_qwen2_5_vl(x, w["mlp.gate_proj.weight"], w["mlp.gate_proj.bias"], w["mlp.up_proj.weight"],
                          w["mlp.up_proj.bias"], w["mlp.down_proj.weight"], w["mlp.down_proj.bias"], cfg.hidden_act)


def vision_block(x, w: dict, cfg: VisionConfig, cos, sin, plan: SegmentPlan, chunk_bytes=DEFAULT_CHUNK_BYTES):
    """One block. ``w`` maps checkpoint names without the ``visual.blocks.{i}.`` prefix to arrays.

    Only attention mixes rows; the rest (norms, projections, RoPE, MLP, residuals) is row by row, so on
    NumPy it runs on row ranges side by side, one per core (:func:`qvlearn.parallel.row_parallel`).
    """
    xp = array_namespace(x)
    n, dim = x.shape

    def project(a, b):  # norm1 -> qkv -> RoPE on rows a:b
        return qkv_rotary(norm(x[a:b, ...], w, "norm1", cfg), w["attn.qkv.weight"], w["attn.qkv.bias"],
                          cos[a:b, ...], sin[a:b, ...], cfg.num_heads)
    q, k, v = row_parallel(project, x)  # [N, heads, d] each
    mixed = parallel_segment_attention(q, k, v, plan, cfg.head_dim ** -0.5, chunk_bytes)  # [N, heads, d]
    mixed = xp.reshape(mixed, (n, dim))

    def finish(a, b):  # proj + residual, then norm2 -> MLP + residual, on rows a:b
        h = x[a:b, ...] + linear(mixed[a:b, ...], w["attn.proj.weight"], w["attn.proj.bias"])
        h += mlp(norm(h, w, "norm2", cfg), w, cfg)
        return h
    return row_parallel(finish, x)
