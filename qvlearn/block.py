"""One vision block: pre-norm residual attention and MLP.

Explained in ``notebooks/06_attention.ipynb`` and ``notebooks/05_norms_and_activations.ipynb``.

    x = x + attn(norm1(x))
    x = x + mlp(norm2(x))

Qwen2-VL: LayerNorm (with bias); MLP ``fc2(quick_gelu(fc1(x)))``.
Qwen2.5-VL: RMSNorm (no bias); MLP ``down_proj(silu(gate_proj(x)) * up_proj(x))``, all with biases.
Qwen3-VL / Qwen3.5: LayerNorm (with bias); MLP ``linear_fc2(gelu_pytorch_tanh(linear_fc1(x)))``.
"""

from __future__ import annotations

from array_api_compat import array_namespace

from .attention import DEFAULT_CHUNK_BYTES, SegmentPlan, parallel_segment_attention, qkv_rotary
from .backend import supports_out
from .config import QWEN2_5_VL, QWEN2_VL, QWEN3_5, QWEN3_VL, VisionConfig
from .layers import ACTIVATIONS, linear
from .norms import layer_norm, rms_norm
from .parallel import row_parallel
from .rotary import rotate_as_pairs, rotation_factors


def _no_tap(name, value):
    pass


def mlp_qwen2_vl(x, fc1_weight, fc1_bias, fc2_weight, fc2_bias, act="quick_gelu", tap=_no_tap):
    """``[N, D] -> [N, 4D] -> act -> [N, D]``. ``tap`` sees ``fc1`` (before the activation) and ``act``."""
    hidden = linear(x, fc1_weight, fc1_bias)  # [N, D] @ [D, 4D] -> [N, 4D]
    tap("fc1", hidden)
    hidden = ACTIVATIONS[act](hidden)
    tap("act", hidden)
    return linear(hidden, fc2_weight, fc2_bias)  # [N, 4D] @ [4D, D] -> [N, D]


def mlp_qwen2_5_vl(x, gate_proj_weight, gate_proj_bias, up_proj_weight, up_proj_bias, down_proj_weight,
                   down_proj_bias, act="silu", tap=_no_tap):
    """``down(act(gate(x)) * up(x))``: ``[N, D] -> 2 x [N, I] -> [N, D]``. ``tap`` sees ``gate`` (before the
    activation), ``up`` and ``act`` (``act(gate) * up``, the input of ``down_proj``)."""
    gate = linear(x, gate_proj_weight, gate_proj_bias)  # [N, I]
    tap("gate", gate)
    hidden = ACTIVATIONS[act](gate)  # [N, I], a new array
    up = linear(x, up_proj_weight, up_proj_bias)  # [N, I]
    tap("up", up)
    hidden *= up
    tap("act", hidden)
    return linear(hidden, down_proj_weight, down_proj_bias)  # [N, I] @ [I, D] -> [N, D]


def norm(x, w: dict, name: str, cfg: VisionConfig):
    """``name`` is ``norm1``/``norm2``/``ln_q``/``norm``: LayerNorm for Qwen2-VL, Qwen3-VL and Qwen3.5, RMSNorm for
    Qwen2.5-VL."""
    if cfg.uses_layer_norm:
        return layer_norm(x, w[f"{name}.weight"], w[f"{name}.bias"], cfg.eps)
    return rms_norm(x, w[f"{name}.weight"], cfg.eps)


def mlp(x, w: dict, cfg: VisionConfig, tap=_no_tap):
    """The block's MLP, by family."""
    if cfg.family == QWEN2_VL:
        return mlp_qwen2_vl(x, w["mlp.fc1.weight"], w["mlp.fc1.bias"], w["mlp.fc2.weight"], w["mlp.fc2.bias"],
                            cfg.hidden_act, tap)
    if cfg.third_generation:  # the same fc1 -> act -> fc2 shape, under other names and gelu_pytorch_tanh
        return mlp_qwen2_vl(x, w["mlp.linear_fc1.weight"], w["mlp.linear_fc1.bias"], w["mlp.linear_fc2.weight"],
                            w["mlp.linear_fc2.bias"], cfg.hidden_act, tap)
    return mlp_qwen2_5_vl(x, w["mlp.gate_proj.weight"], w["mlp.gate_proj.bias"], w["mlp.up_proj.weight"],
                          w["mlp.up_proj.bias"], w["mlp.down_proj.weight"], w["mlp.down_proj.bias"], cfg.hidden_act,
                          tap)


BLOCK_STAGES = {
    QWEN2_VL: ("norm1", "attn.q", "attn.k", "attn", "residual1", "norm2", "mlp.fc1", "mlp.act", "mlp"),
    QWEN2_5_VL: ("norm1", "attn.q", "attn.k", "attn", "residual1", "norm2", "mlp.gate", "mlp.up", "mlp.act", "mlp"),
}
BLOCK_STAGES[QWEN3_VL] = BLOCK_STAGES[QWEN3_5] = BLOCK_STAGES[QWEN2_VL]
"""The stages inside a block, in order, as :func:`vision_block_tapped` reports them (``blocks.{i}.<name>`` in
a trace). ``attn.q``/``attn.k``: ``[N, heads, head_dim]`` after RoPE; ``attn``: after ``proj``, before the
residual; ``residual1``: ``x + attn``; ``mlp.*``: the MLP's intermediates; ``mlp``: its output."""


def vision_block_tapped(x, w: dict, cfg: VisionConfig, cos, sin, plan: SegmentPlan, tap,
                        chunk_bytes=DEFAULT_CHUNK_BYTES):
    """:func:`vision_block` one step per line, calling ``tap(name, array)`` with every stage of
    :data:`BLOCK_STAGES`. Same kernels and the same result (up to the BLAS's summation order); the
    encoder runs it for the blocks whose inner stages a trace asks for."""
    xp = array_namespace(x)
    n, dim = x.shape
    h = norm(x, w, "norm1", cfg)  # [N, D]
    tap("norm1", h)
    q, k, v = qkv_rotary(h, w["attn.qkv.weight"], w["attn.qkv.bias"], cos, sin, cfg.num_heads)  # [N, heads, d]
    tap("attn.q", q)
    tap("attn.k", k)
    mixed = parallel_segment_attention(q, k, v, plan, cfg.head_dim ** -0.5, chunk_bytes)  # [N, heads, d]
    attn = linear(xp.reshape(mixed, (n, dim)), w["attn.proj.weight"], w["attn.proj.bias"])  # [N, D]
    tap("attn", attn)
    h = x + attn  # the first residual
    tap("residual1", h)
    normed = norm(h, w, "norm2", cfg)
    tap("norm2", normed)
    out = mlp(normed, w, cfg, tap=lambda name, value: tap(f"mlp.{name}", value))
    tap("mlp", out)
    return h + out  # the second residual


def _project_by_halves(x, w: dict, cfg: VisionConfig, cos, sin):
    """norm1 -> qkv -> RoPE for :func:`vision_block` as :func:`vision_block_tapped` writes it (``rotate_half``
    on the halves), on row ranges: q, k, v ``[N, heads, d]`` in the checkpoint's channel order."""
    def project(a, b):  # rows a:b
        return qkv_rotary(norm(x[a:b, ...], w, "norm1", cfg), w["attn.qkv.weight"], w["attn.qkv.bias"],
                          cos[a:b, ...], sin[a:b, ...], cfg.num_heads)
    return row_parallel(project, x)


def _project_in_place(x, w: dict, cfg: VisionConfig, cos, sin):
    """norm1 -> qkv -> RoPE for :func:`vision_block`, each row range writing into arrays made once: ``q, k``
    from :func:`qvlearn.rotary.rotate_as_pairs` (each head's rotated channels in pairs, ``j`` next to
    ``j + d/2``, for both q and k: the scores are those of the halves layout) and ``v`` as the checkpoint
    lays it out. No concatenation after the parts."""
    xp = array_namespace(x)
    n, heads, d = x.shape[0], cfg.num_heads, cfg.head_dim
    rot = rotation_factors(cos, sin)  # [N, d/2] complex64
    qk = xp.empty((n, 2, heads, d // 2), dtype=xp.complex64)  # q and k, rotated, as pairs
    v = xp.empty((n, heads, d), dtype=x.dtype)

    def project(a, b):  # rows a:b
        qkv = linear(norm(x[a:b, ...], w, "norm1", cfg), w["attn.qkv.weight"], w["attn.qkv.bias"])  # [rows, 3D]
        qkv = xp.reshape(qkv, (b - a, 3, heads, d))
        rotate_as_pairs(qkv[:, :2, ...], rot[a:b, ...], qk[a:b, ...])
        v[a:b, ...] = qkv[:, 2, ...]
    row_parallel(project, x)
    qk = xp.reshape(qk.view(x.dtype), (n, 2, heads, d))
    return qk[:, 0, ...], qk[:, 1, ...], v


def vision_block(x, w: dict, cfg: VisionConfig, cos, sin, plan: SegmentPlan, chunk_bytes=DEFAULT_CHUNK_BYTES):
    """One block. ``w`` maps checkpoint names without the ``visual.blocks.{i}.`` prefix to arrays; ``cos, sin
    [N, head_dim]`` as :func:`qvlearn.rotary.rotary_cos_sin` makes them (the second half repeats the first).

    Only attention mixes rows; the rest (norms, projections, RoPE, MLP, residuals) is row by row, so on
    NumPy it runs on row ranges side by side, one per core (:func:`qvlearn.parallel.row_parallel`).
    """
    xp = array_namespace(x)
    n, dim = x.shape
    # NumPy, CuPy: RoPE as a complex multiplication, every part writing its rows in place
    project = _project_in_place if supports_out(xp) else _project_by_halves
    q, k, v = project(x, w, cfg, cos, sin)  # [N, heads, d] each
    mixed = parallel_segment_attention(q, k, v, plan, cfg.head_dim ** -0.5, chunk_bytes)  # [N, heads, d]
    mixed = xp.reshape(mixed, (n, dim))

    def finish(a, b):  # proj + residual, then norm2 -> MLP + residual, on rows a:b
        h = x[a:b, ...] + linear(mixed[a:b, ...], w["attn.proj.weight"], w["attn.proj.bias"])
        h += mlp(norm(h, w, "norm2", cfg), w, cfg)
        return h
    return row_parallel(finish, x)
