"""The whole vision encoder of every family, top to bottom, as a porter would port it.

    from qvlearn.config import read_config
    from qvlearn.weights import load_weights
    from qvlearn import spec
    config = read_config("Qwen2.5-VL-7B-Instruct")                   # the VisionConfig of config.json
    weights = load_weights("Qwen2.5-VL-7B-Instruct", config)           # {"blocks.0.attn.qkv.weight": ..., ...}
    embeddings = spec.forward(config, weights, pixel_values, grid_thw)  # [N/4, out_hidden_size]

Plain float32 NumPy functions over the checkpoint's named weights (names without ``visual.`` /
``model.visual.``), one shape comment per tensor line, the formula beside the code. No classes, no threads, no
tiling, no tricks: this is the readable forward; :class:`qvlearn.VisionEncoder` is the fast one, and the tests
hold the two (and transformers) within 1e-5 of each other on every family.

Only the index builders (2-D positions, windows, segment boundaries, the position table's interpolation taps)
come from the modules that own them: they are integer bookkeeping, derived in notebooks 1, 3, 4 and 13.

Shapes: ``N`` patches (rows of ``pixel_values``), ``D`` the ViT width, ``H`` heads of ``d = D / H`` channels,
``I`` the MLP width, ``M = 4D`` after the 2x2 merge, ``out`` the LLM width.
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from .config import VisionConfig
from .pos_embed import interpolation_indices_and_weights
from .rotary import rotary_position_ids
from .window_index import cu_seqlens, window_index

f32 = np.float32


# ---------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------
def linear(x, w, name):
    """``y = x W^T + b`` with the checkpoint's ``name.weight`` [out, in] and ``name.bias`` [out] (if any)."""
    y = x @ w[f"{name}.weight"].T                                     # [n, in] @ [in, out] -> [n, out]
    return y + w[f"{name}.bias"] if f"{name}.bias" in w else y


def layer_norm(x, weight, bias, eps):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last axis (Qwen2-VL, Qwen3-VL, Qwen3.5)."""
    mean = x.mean(axis=-1, keepdims=True)                             # [n, 1]
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)              # [n, 1], biased, as torch
    return (x - mean) / np.sqrt(var + f32(eps)) * weight + bias       # [n, D]


def rms_norm(x, weight, eps):
    """``x / sqrt(mean(x^2) + eps) * weight`` (Qwen2.5-VL): no centring, no bias, eps inside the root."""
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + f32(eps)) * weight   # [n, D]


def norm(x, w, name, config):
    if config.uses_layer_norm:
        return layer_norm(x, w[f"{name}.weight"], w[f"{name}.bias"], config.eps)
    return rms_norm(x, w[f"{name}.weight"], config.eps)


def sigmoid(x):
    return f32(1) / (f32(1) + np.exp(-x))


ACTIVATIONS = {
    "quick_gelu": lambda x: x * sigmoid(f32(1.702) * x),                                  # Qwen2-VL blocks
    "silu": lambda x: x * sigmoid(x),                                                      # Qwen2.5-VL gate
    "gelu": lambda x: f32(0.5) * x * (f32(1) + erf(x / f32(np.sqrt(2)))),                 # exact: every merger
    "gelu_pytorch_tanh": lambda x: f32(0.5) * x * (f32(1) + np.tanh(                       # Qwen3 blocks
        f32(np.sqrt(2 / np.pi)) * (x + f32(0.044715) * x ** 3))),
}


# ---------------------------------------------------------------------------------------------------------------
# Positions: the 2-D rotary embedding and Qwen3's learned table
# ---------------------------------------------------------------------------------------------------------------
def rotary_cos_sin(grid_thw, config):
    """``cos, sin [N, d]``: the first d/2 channels rotate by the patch's row, the next d/2 by its column, each half
    laid out [row freqs | col freqs] and repeated: angles = [r*f | c*f | r*f | c*f], f_i = theta^(-4i / d)."""
    d = config.head_dim
    freqs = f32(1) / f32(config.rope_theta) ** (np.arange(0, d // 2, 2, dtype=f32) / f32(d // 2))   # [d/4]
    ids = rotary_position_ids(grid_thw, config.spatial_merge_size).astype(f32)  # [N, 2] (row, col), block order
    angles = (ids[:, :, None] * freqs).reshape(len(ids), -1)          # [N, 2, d/4] -> [N, d/2]
    angles = np.concatenate([angles, angles], axis=-1)                # [N, d]
    return np.cos(angles), np.sin(angles)


def rotate(x, cos, sin):
    """RoPE with the halves convention: ``x * cos + rotate_half(x) * sin``, rotate_half([a | b]) = [-b | a]."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # [N, H, d]
    return x * cos[:, None, :] + rotated * sin[:, None, :]              # [N, H, d]


def learned_positions(table, grid_thw, config):
    """Qwen3: the ``side x side`` table [side^2, D] sampled bilinearly, corners aligned, at every patch (merge-block
    order, repeated per frame pair): ``sum_k table[idx_k] * w_k`` over the 4 surrounding entries."""
    idx, wts = interpolation_indices_and_weights(grid_thw, config.position_grid_side, config.spatial_merge_size)
    out = table[idx[:, 0]] * wts[:, 0:1]                              # [N, D]
    for k in range(1, 4):                                             # summed in transformers' order
        out = out + table[idx[:, k]] * wts[:, k:k + 1]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Attention, the block, the mergers
# ---------------------------------------------------------------------------------------------------------------
def attention(x, w, cos, sin, segments, config):
    """Multi-head self-attention inside each segment ``[a, b)`` of rows (a frame pair, or a window)."""
    n, heads, d = len(x), config.num_heads, config.head_dim
    if "attn.qkv.weight" in w:                                        # one fused projection (every family but ...
        qkv = linear(x, w, "attn.qkv").reshape(n, 3, heads, d)       # [N, 3D] -> [N, 3, H, d]: q, k, v head-major
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]                     # [N, H, d] each
    else:                                                             # ... Qwen2.5-Omni: three linears, same values)
        q, k, v = (linear(x, w, f"attn.{name}").reshape(n, heads, d) for name in ("q", "k", "v"))
    q, k = rotate(q, cos, sin), rotate(k, cos, sin)                   # RoPE on q and k only
    out = np.empty_like(v)                                            # [N, H, d]
    for a, b in zip(segments[:-1], segments[1:]):
        qs, ks, vs = (t[a:b].transpose(1, 0, 2) for t in (q, k, v))   # [H, s, d]
        scores = qs @ ks.transpose(0, 2, 1) * f32(d ** -0.5)          # [H, s, s]  q k^T / sqrt(d)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))  # softmax, numerically safe
        probs = scores / scores.sum(axis=-1, keepdims=True)           # [H, s, s]
        out[a:b] = (probs @ vs).transpose(1, 0, 2)                    # [H, s, d] -> [s, H, d]
    return linear(out.reshape(n, heads * d), w, "attn.proj")          # [N, D]


def mlp(x, w, config):
    act = ACTIVATIONS[config.hidden_act]
    if "mlp.gate_proj.weight" in w:                                   # Qwen2.5-VL: SwiGLU
        return linear(act(linear(x, w, "mlp.gate_proj")) * linear(x, w, "mlp.up_proj"), w, "mlp.down_proj")
    fc1, fc2 = ("mlp.fc1", "mlp.fc2") if "mlp.fc1.weight" in w else ("mlp.linear_fc1", "mlp.linear_fc2")
    return linear(act(linear(x, w, fc1)), w, fc2)                     # [N, D] -> [N, I] -> [N, D]


def block(x, w, cos, sin, segments, config):
    """Pre-norm residual block: ``x + attn(norm1(x))``, then ``+ mlp(norm2(x))``."""
    x = x + attention(norm(x, w, "norm1", config), w, cos, sin, segments, config)  # [N, D]
    return x + mlp(norm(x, w, "norm2", config), w, config)                         # [N, D]


def merger(x, w, prefix, config, norm_after_merge=False):
    """Every 4 consecutive rows (one 2x2 merge block) become one LLM token: norm, concat to [N/4, 4D], Linear,
    exact GELU, Linear. The main merger normalises each patch over D first; DeepStack's mergers normalise the
    concatenated 4D vector after the merge (``norm_after_merge``)."""
    name, fc1, fc2 = config.kind.merger_names                         # (ln_q, mlp.0, mlp.2) or (norm, linear_fc1, ..)
    mw = {k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)}
    unit = config.merge_unit
    if not norm_after_merge:
        x = norm(x, mw, name, config)                                 # [N, D]
    x = x.reshape(len(x) // unit, unit * x.shape[1])                  # [N/4, 4D]
    if norm_after_merge:
        x = layer_norm(x, mw[f"{name}.weight"], mw[f"{name}.bias"], config.eps)   # [N/4, 4D]
    return linear(ACTIVATIONS["gelu"](linear(x, mw, fc1)), mw, fc2)   # [N/4, M] -> [N/4, out]


# ---------------------------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------------------------
def forward(config: VisionConfig, weights: dict, pixel_values, grid_thw, deepstack: bool = False, tap=None):
    """``pixel_values [N, C*T*P*P]`` and ``grid_thw [k, 3]`` (as :func:`qvlearn.preprocess` returns them) ->
    ``embeddings [N/4, out]`` in transformers' order; with ``deepstack=True``, ``(embeddings, features)``, the
    Qwen3-VL DeepStack features (one ``[N/4, out]`` per ``deepstack_visual_indexes`` entry; ``[]`` otherwise).
    ``tap(name, array)``, if given, sees the main stages under their tap names (docs/porting.md, section 7)."""
    tap = tap or (lambda name, array: None)
    w = {k: np.asarray(v, dtype=f32) for k, v in weights.items()}
    grid = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    m, unit = config.spatial_merge_size, config.merge_unit
    tap("pixel_values", np.asarray(pixel_values, dtype=f32))
    tap("grid_thw", grid)

    # 1. Patch embedding: the Conv3d with stride = kernel is one matmul over the flattened (C, T, P, P) patch.
    conv = w["patch_embed.proj.weight"].reshape(config.width, -1)     # [D, C*T*P*P]
    x = np.asarray(pixel_values, dtype=f32) @ conv.T                  # [N, D]
    if "patch_embed.proj.bias" in w:                                  # Qwen3: the Conv3d has a bias ...
        x = x + w["patch_embed.proj.bias"]
    tap("patch_embeds", x)
    if "pos_embed.weight" in w:                                       # ... and a learned position table
        positions = learned_positions(w["pos_embed.weight"], grid, config)   # [N, D]
        tap("pos_embeds", positions)
        x = x + positions

    # 2. Positions and segments: rotary angles per patch; full attention within each frame pair of each image.
    cos, sin = rotary_cos_sin(grid, config)                           # [N, d] each
    full = cu_seqlens(grid, m)                                        # [segments + 1], starts at 0
    tap("cos", cos)
    tap("sin", sin)
    tap("cu_seqlens", full)
    windows = order = None
    if config.uses_windows:                                           # Qwen2.5-VL: 112-px windows
        merged_order, windows = window_index(grid, m, config.window_size, config.patch_size)   # [N/4], [w + 1]
        tap("window_index", merged_order)
        tap("cu_window_seqlens", windows)
        order = (merged_order[:, None] * unit + np.arange(unit)).reshape(-1)   # [N]: patch rows, window by window
        x, cos, sin = x[order], cos[order], sin[order]                # window order from here to the merger

    # 3. The blocks; Qwen3-VL's DeepStack taps some block outputs through mergers of their own.
    features = []
    for i in range(config.depth):
        bw = {k[len(f"blocks.{i}."):]: v for k, v in w.items() if k.startswith(f"blocks.{i}.")}
        segments = full if windows is None or config.is_full_attention_block(i) else windows
        x = block(x, bw, cos, sin, segments, config)                  # [N, D]
        tap(f"blocks.{i}", x)                                         # window order where windowed
        if i in config.deepstack_visual_indexes:
            j = list(config.deepstack_visual_indexes).index(i)
            features.append(merger(x, w, f"{config.kind.deepstack_name}.{j}.", config, norm_after_merge=True))
            tap(f"deepstack.{j}", features[-1])

    # 4. The merger, then (Qwen2.5-VL) back from window order to the processor's order.
    tap("last_hidden_state", x)
    out = merger(x, w, "merger.", config)                             # [N/4, out]
    tap("merger", out)
    if order is not None:
        out = out[np.argsort(merged_order)]                           # undo the window permutation (merged rows)
    tap("embeddings", out)
    return (out, features) if deepstack else out
