"""The whole vision encoder of every family, top to bottom, in one file: what a porter reads and ports.

    from qvlearn.config import read_config
    from qvlearn.weights import load_weights
    from qvlearn import spec
    config = read_config("Qwen2.5-VL-7B-Instruct")                   # the VisionConfig of config.json
    weights = load_weights("Qwen2.5-VL-7B-Instruct", config)           # {"blocks.0.attn.qkv.weight": ..., ...}
    embeddings = spec.forward(config, weights, pixel_values, grid_thw)  # [N/4, out_hidden_size]

Plain float32 NumPy functions over the checkpoint's named weights (names without ``visual.`` /
``model.visual.``), one shape comment per tensor line, the formula beside the code. No classes, no threads, no
tiling, no tricks: this is the readable forward; :class:`qvlearn.VisionEncoder` is the fast one, and the tests
hold the two (and transformers) within 1e-5 of each other on every family, stage by stage. The index bookkeeping
(2-D positions in merge-block order, segments, the window order with its padding, the position table's taps) is
here too, as plain functions: the engine keeps faster ones, held equal to these over many grids and videos.

Every choice between the families is read from ``config.kind``, the family's entry of :mod:`qvlearn.families`:
``norm`` ("layer" / "rms"), ``mlp`` and ``mlp_names``, ``qkv_names``, ``patch_bias``, ``position_table``,
``windows``, ``deepstack_name`` and ``merger_names``. This file imports only NumPy, SciPy's erf and the config type.

Shapes: ``N`` patches (rows of ``pixel_values``), ``D`` the ViT width, ``H`` heads of ``d = D / H`` channels,
``I`` the MLP width, ``M = 4D`` after the 2x2 merge, ``out`` the LLM width, ``m`` the merge size (2).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erf

from .config import VisionConfig

f32 = np.float32
PAD = -100  # transformers' filler in the padded window grid


# ---------------------------------------------------------------------------------------------------------------
# Index bookkeeping (host integers): patch positions, segments, windows
# ---------------------------------------------------------------------------------------------------------------
def position_ids(grid_thw, m: int = 2):
    """``[N, 2]`` (row, col) of every patch in ``pixel_values`` order: the grid read 2x2 merge block by merge block
    (each block's 4 patches in raster order), blocks in raster order, repeated for every frame pair (t)."""
    out = []
    for t, h, w in np.asarray(grid_thw).reshape(-1, 3).tolist():
        rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")   # [h, w] each
        blocks = lambda a: a.reshape(h // m, m, w // m, m).transpose(0, 2, 1, 3).reshape(-1)  # noqa: E731
        out.append(np.tile(np.stack([blocks(rows), blocks(cols)], axis=-1), (t, 1)))          # [t*h*w, 2]
    return np.concatenate(out).astype(np.int64)                                               # [N, 2]


def cu_seqlens(grid_thw, m: int = 2):
    """``[segments + 1]`` row boundaries of full attention, from 0: one segment of h*w patches per frame pair."""
    grid = np.asarray(grid_thw).reshape(-1, 3)
    lengths = np.repeat(grid[:, 1] * grid[:, 2], grid[:, 0])          # h*w, t times per image / video
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def window_index(grid_thw, m: int = 2, window_size: int = 112, patch_size: int = 14):
    """Qwen2.5-VL's windows: ``(order [N/4], cu_window_seqlens [windows + 1])``. On each frame pair's merged grid
    (h/m x w/m tokens), windows of ``s = window_size // m // patch_size`` tokens a side (4): pad bottom and right with
    PAD by ``s - size % s`` (a whole empty row or column of windows when the size divides: transformers' rule), cut
    into windows, read windows in raster order and tokens in raster order inside each, drop the padding. ``order[r]``
    is the merged token at window-ordered row r; the boundaries count patches (4 per token), empty windows dropped."""
    s, unit = window_size // m // patch_size, m * m
    order, bounds, offset = [], [0], 0
    for t, h, w in np.asarray(grid_thw).reshape(-1, 3).tolist():
        gh, gw = h // m, w // m                                       # the merged grid
        ph, pw = gh + s - gh % s, gw + s - gw % s                     # padded: s more when already divisible
        padded = np.full((t, ph, pw), PAD, dtype=np.int64)            # [t, ph, pw]
        padded[:, :gh, :gw] = np.arange(t * gh * gw).reshape(t, gh, gw) + offset
        tiles = padded.reshape(t, ph // s, s, pw // s, s).transpose(0, 1, 3, 2, 4).reshape(-1, s * s)  # [win, s*s]
        order.append(tiles[tiles != PAD])                             # tokens, window by window
        for count in (tiles != PAD).sum(axis=1).tolist():
            if count:                                                 # unique_consecutive: empty windows vanish
                bounds.append(bounds[-1] + count * unit)
        offset += t * gh * gw
    return np.concatenate(order), np.asarray(bounds, dtype=np.int32)


def table_taps(grid_thw, side: int, m: int = 2):
    """Qwen3's learned table, bilinear with the corners aligned (``F.interpolate(align_corners=True)``):
    ``(indices [N, 4], weights [N, 4])``. Patch row r of an h-row image reads table row ``y = r * (side-1) / (h-1)``
    (0 when h = 1), all in float32; its two rows are ``y0 = floor(y)`` and ``y0 + 1``, the upper one clamped to
    ``side - 1``, with weights ``1 - |y - y0 - k|`` for k = 0, 1 (``1 - dy`` and ``1 - (1 - dy)``, which float32
    rounds differently from ``dy``: transformers' formula); the same for columns. The four taps, in this order:
    (y0, x0), (y0, x1), (y1, x0), (y1, x1), each weight the product of its row's and its column's."""
    grid = np.asarray(grid_thw).reshape(-1, 3)
    ids = position_ids(grid, m)                                       # [N, 2], pixel_values order
    sizes = np.repeat(grid[:, 1:], grid.prod(axis=1), axis=0)         # [N, 2] (h, w) of each patch's image

    def axis(index, size):                                            # -> taps [N, 2], weights [N, 2]
        y = index.astype(f32) * f32(side - 1) / np.maximum(size - 1, 1).astype(f32)   # [N], in table units
        y0 = np.floor(y)
        taps = np.minimum(y0.astype(np.int64)[:, None] + np.arange(2), side - 1)       # clamped upper neighbour
        distance = np.abs(y[:, None] - y0[:, None] - np.arange(2, dtype=f32))        # [N, 2]: dy, 1 - dy
        return taps, np.maximum(f32(1) - distance, f32(0))

    (ry, wy), (cx, wx) = axis(ids[:, 0], sizes[:, 0]), axis(ids[:, 1], sizes[:, 1])
    indices = (ry[:, :, None] * side + cx[:, None, :]).reshape(-1, 4)   # [N, 4] flat table rows
    weights = (wy[:, :, None] * wx[:, None, :]).reshape(-1, 4)          # [N, 4], float32
    return indices, weights


# ---------------------------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------------------------
def param(w, name):
    """The tensor ``name`` of the weights; a missing one is an error that names it."""
    if name not in w:
        some = ", ".join(sorted(w)[:4])
        raise ValueError(f"spec: the weights have no {name!r} (names without the visual. prefix, e.g. {some}, ...): "
                         "a checkpoint of another family, or weights not loaded with qvlearn.load_weights?")
    return w[name]


def linear(x, w, name):
    """``y = x W^T + b`` with the checkpoint's ``name.weight`` [out, in] and ``name.bias`` [out]."""
    return x @ param(w, f"{name}.weight").T + param(w, f"{name}.bias")  # [n, in] @ [in, out] -> [n, out]


def layer_norm(x, weight, bias, eps):
    """``(x - mean) / sqrt(var + eps) * weight + bias`` over the last axis (Qwen2-VL, the third generation)."""
    mean = x.mean(axis=-1, keepdims=True)                             # [n, 1]
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)              # [n, 1], biased, as torch
    return (x - mean) / np.sqrt(var + f32(eps)) * weight + bias       # [n, D]


def rms_norm(x, weight, eps):
    """``x / sqrt(mean(x^2) + eps) * weight`` (Qwen2.5-VL): no centring, no bias, eps inside the root."""
    return x / np.sqrt((x * x).mean(axis=-1, keepdims=True) + f32(eps)) * weight   # [n, D]


def norm(x, w, name, config):
    """The family's norm (``config.kind.norm``) with the weights ``name.weight`` (and ``name.bias``)."""
    if config.kind.norm == "layer":
        return layer_norm(x, param(w, f"{name}.weight"), param(w, f"{name}.bias"), config.eps)
    return rms_norm(x, param(w, f"{name}.weight"), config.eps)


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
    ids = position_ids(grid_thw, config.spatial_merge_size).astype(f32)  # [N, 2] (row, col), block order
    angles = (ids[:, :, None] * freqs).reshape(len(ids), -1)          # [N, 2, d/4] -> [N, d/2]
    angles = np.concatenate([angles, angles], axis=-1)                # [N, d]
    return np.cos(angles), np.sin(angles)


def rotate(x, cos, sin):
    """RoPE with the halves convention: ``x * cos + rotate_half(x) * sin``, rotate_half([a | b]) = [-b | a]."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)  # [N, H, d]
    return x * cos[:, None, :] + rotated * sin[:, None, :]              # [N, H, d]


def learned_positions(table, grid_thw, config):
    """Qwen3: the ``side x side`` table [side^2, D] sampled at every patch (:func:`table_taps`):
    ``sum_k table[idx_k] * w_k`` over the 4 surrounding entries, summed in transformers' order k = 0..3."""
    idx, wts = table_taps(grid_thw, config.position_grid_side, config.spatial_merge_size)   # [N, 4] each
    out = table[idx[:, 0]] * wts[:, 0:1]                              # [N, D]
    for k in range(1, 4):
        out = out + table[idx[:, k]] * wts[:, k:k + 1]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Attention, the block, the mergers
# ---------------------------------------------------------------------------------------------------------------
def _quiet(name, array):
    return None


def attention(x, w, cos, sin, segments, config, tap=_quiet):
    """Multi-head self-attention inside each segment ``[a, b)`` of rows (a frame pair, or a window)."""
    n, heads, d = len(x), config.num_heads, config.head_dim
    if config.kind.qkv_names == ("qkv",):                             # one fused projection (every family but ...
        qkv = linear(x, w, "attn.qkv").reshape(n, 3, heads, d)       # [N, 3D] -> [N, 3, H, d]: q, k, v head-major
        q, k, v = qkv[:, 0], qkv[:, 1], qkv[:, 2]                     # [N, H, d] each
    else:                                                             # ... Qwen2.5-Omni: three linears, same values)
        q, k, v = (linear(x, w, f"attn.{name}").reshape(n, heads, d) for name in config.kind.qkv_names)
    q, k = rotate(q, cos, sin), rotate(k, cos, sin)                   # RoPE on q and k only
    tap("attn.q", q)                                                  # after RoPE, before the 1/sqrt(d) scale
    tap("attn.k", k)
    out = np.empty_like(v)                                            # [N, H, d]
    for a, b in zip(segments[:-1], segments[1:]):
        qs, ks, vs = (t[a:b].transpose(1, 0, 2) for t in (q, k, v))   # [H, s, d]
        scores = qs @ ks.transpose(0, 2, 1) * f32(d ** -0.5)          # [H, s, s]  q k^T / sqrt(d)
        scores = np.exp(scores - scores.max(axis=-1, keepdims=True))  # softmax, numerically safe
        probs = scores / scores.sum(axis=-1, keepdims=True)           # [H, s, s]
        out[a:b] = (probs @ vs).transpose(1, 0, 2)                    # [H, s, d] -> [s, H, d]
    return linear(out.reshape(n, heads * d), w, "attn.proj")          # [N, D]


def mlp(x, w, config, tap=_quiet):
    """``fc2(act(fc1 x))``, or for a gated MLP (Qwen2.5-VL) ``down(act(gate x) * up x)``; names from the table."""
    act = ACTIVATIONS[config.hidden_act]
    names = [f"mlp.{name}" for name in config.kind.mlp_names]        # (fc1, fc2) or (gate, up, down)
    if config.kind.mlp == "gated":
        gate, up = linear(x, w, names[0]), linear(x, w, names[1])     # [N, I] each
        tap("mlp.gate", gate)
        tap("mlp.up", up)
        hidden = act(gate) * up                                       # [N, I]
    else:
        hidden = linear(x, w, names[0])                               # [N, I]
        tap("mlp.fc1", hidden)
        hidden = act(hidden)
    tap("mlp.act", hidden)
    return linear(hidden, w, names[-1])                               # [N, D]


def block(x, w, cos, sin, segments, config, tap=_quiet):
    """Pre-norm residual block: ``x + attn(norm1(x))``, then ``+ mlp(norm2(x))``."""
    h = norm(x, w, "norm1", config)                                   # [N, D]
    tap("norm1", h)
    h = attention(h, w, cos, sin, segments, config, tap)              # [N, D]
    tap("attn", h)
    x = x + h
    tap("residual1", x)
    h = norm(x, w, "norm2", config)
    tap("norm2", h)
    h = mlp(h, w, config, tap)                                        # [N, D]
    tap("mlp", h)
    return x + h


def merger(x, w, prefix, config, norm_after_merge=False, tap=_quiet):
    """Every 4 consecutive rows (one 2x2 merge block) become one LLM token: norm, concat to [N/4, 4D], Linear,
    exact GELU, Linear. The main merger normalises each patch over D first; DeepStack's mergers normalise the
    concatenated 4D vector after the merge (``norm_after_merge``), with the family's norm."""
    name, fc1, fc2 = config.kind.merger_names                         # (ln_q, mlp.0, mlp.2) or (norm, linear_fc1, ..)
    mw = {k[len(prefix):]: v for k, v in w.items() if k.startswith(prefix)}
    if not mw:
        param(w, f"{prefix}{fc1}.weight")                             # names what is missing
    unit = config.merge_unit
    if not norm_after_merge:
        x = norm(x, mw, name, config)                                 # [N, D]
        tap(f"merger.{name}", x)
    x = x.reshape(len(x) // unit, unit * x.shape[1])                  # [N/4, 4D]
    if norm_after_merge:
        x = norm(x, mw, name, config)                                 # [N/4, 4D]
    return linear(ACTIVATIONS["gelu"](linear(x, mw, fc1)), mw, fc2)   # [N/4, M] -> [N/4, out]


# ---------------------------------------------------------------------------------------------------------------
# The encoder
# ---------------------------------------------------------------------------------------------------------------
def forward(config: VisionConfig, weights: dict, pixel_values, grid_thw, deepstack: bool = False, tap=None):
    """``pixel_values [N, C*T*P*P]`` and ``grid_thw [k, 3]`` (as :func:`qvlearn.preprocess` returns them) ->
    ``embeddings [N/4, out]`` in transformers' order; with ``deepstack=True``, ``(embeddings, features)``, the
    Qwen3-VL DeepStack features (one ``[N/4, out]`` per ``deepstack_visual_indexes`` entry; ``[]`` otherwise).
    ``tap(name, array)``, if given, sees every stage of the tap table under its tap name (docs/porting.md, section 7),
    the stages inside each block included."""
    tap = tap or _quiet
    kind = config.kind
    w = {k: np.asarray(v, dtype=f32) for k, v in weights.items()}
    grid = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
    m, unit = config.spatial_merge_size, config.merge_unit
    tap("pixel_values", np.asarray(pixel_values, dtype=f32))
    tap("grid_thw", grid)

    # 1. Patch embedding: the Conv3d with stride = kernel is one matmul over the flattened (C, T, P, P) patch.
    conv = param(w, "patch_embed.proj.weight").reshape(config.width, -1)   # [D, C*T*P*P]
    x = np.asarray(pixel_values, dtype=f32) @ conv.T                  # [N, D]
    if kind.patch_bias:                                               # Qwen3: the Conv3d has a bias ...
        x = x + param(w, "patch_embed.proj.bias")
    tap("patch_embeds", x)
    if kind.position_table:                                           # ... and a learned position table
        positions = learned_positions(param(w, "pos_embed.weight"), grid, config)   # [N, D]
        tap("pos_embeds", positions)
        x = x + positions

    # 2. Positions and segments: rotary angles per patch; full attention within each frame pair of each image.
    tap("position_ids", position_ids(grid, m))
    cos, sin = rotary_cos_sin(grid, config)                           # [N, d] each
    full = cu_seqlens(grid, m)                                        # [segments + 1], starts at 0
    tap("cos", cos)
    tap("sin", sin)
    tap("cu_seqlens", full)
    windows = order = None
    if kind.windows:                                                  # Qwen2.5-VL: 112-px windows
        merged_order, windows = window_index(grid, m, config.window_size, config.patch_size)   # [N/4], [w + 1]
        tap("window_index", merged_order)
        tap("cu_window_seqlens", windows)
        order = (merged_order[:, None] * unit + np.arange(unit)).reshape(-1)   # [N]: patch rows, window by window
        restore = np.argsort(order)                                   # [N]: back to natural order
        x, cos, sin = x[order], cos[order], sin[order]                # window order from here to the merger

    # 3. The blocks; Qwen3-VL's DeepStack taps some block outputs through mergers of their own.
    features = []
    for i in range(config.depth):
        bw = {k[len(f"blocks.{i}."):]: v for k, v in w.items() if k.startswith(f"blocks.{i}.")}
        segments = full if windows is None or config.is_full_attention_block(i) else windows
        x = block(x, bw, cos, sin, segments, config, lambda name, a, i=i: tap(f"blocks.{i}.{name}", a))  # [N, D]
        tap(f"blocks.{i}", x)                                         # window order where windowed
        if order is not None:
            tap(f"blocks.{i}.natural", x[restore])
        if i in config.deepstack_visual_indexes:
            j = list(config.deepstack_visual_indexes).index(i)
            features.append(merger(x, w, f"{kind.deepstack_name}.{j}.", config, norm_after_merge=True))
            tap(f"deepstack.{j}", features[-1])

    # 4. The merger, then (Qwen2.5-VL) back from window order to the processor's order.
    tap("last_hidden_state", x)
    out = merger(x, w, "merger.", config, tap=tap)                    # [N/4, out]
    tap("merger", out)
    if order is not None:
        out = out[np.argsort(merged_order)]                           # undo the window permutation (merged rows)
    tap("embeddings", out)
    return (out, features) if deepstack else out
