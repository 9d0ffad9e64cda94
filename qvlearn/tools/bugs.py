"""A zoo of real porting bugs, each a switch on qvlearn itself, to see what a port's taps look like.

Explained in ``notebooks/12_debugging_a_port.ipynb``. For porters: inject a bug, write taps, and read
``compare``'s verdict; the stage it names is where the bug lives, the error size and the note say what
kind of bug it is. ``tests/test_bugs.py`` proves that ``compare`` names each bug's stage.

    from qvlearn.tools import bugs
    encoder = qvlearn.load_encoder(path, kernels=bugs.kernels("rope-interleaved"))
    buggy = encoder.trace(pixel_values, grid_thw, to_numpy=True, stages=["*"])
    # preprocessing bugs: qvlearn.preprocess(..., steps=bugs.steps("resize-bilinear"))

Each bug is one or two entries of the engine's kernel table (:mod:`qvlearn.engine.kernels`) or of the
preprocessing steps (:class:`qvlearn.preprocessing.Steps`) swapped for a wrong one: the engine carries no bug
flags and nothing is patched. ``reported`` names where the bug was reported in public (an issue or pull request),
or says that no public report was found and which notebook explains the detail.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from array_api_compat import array_namespace

from .. import preprocessing
from ..engine import rotary
from ..engine.kernels import KERNELS, Kernels
from ..engine.layers import gelu, gelu_tanh
from ..errors import InputError
from ..preprocessing import STEPS, Steps


@dataclass(frozen=True)
class Bug:
    name: str
    title: str
    reported: str
    stage: str        # the first stage compare names when this bug is injected (tests/test_bugs.py)
    symptom: str
    family: str = "qwen2_5_vl"   # the tower it is shown on: qwen2_vl, qwen2_5_vl, qwen3_vl, qwen3_5
    needs: str = "batch"         # the input that shows it: batch (two images and a video), rgba, size70
    kernels: dict = field(default_factory=dict, repr=False)  # kernel-table entries replaced
    steps: dict = field(default_factory=dict, repr=False)    # preprocessing steps replaced


# --- the replacements -----------------------------------------------------------------------------------

def _rotate_interleaved(x, cos, sin):
    """GPT-J pairing (0,1), (2,3), ... with the same angles: what ``rotary_mode="interleave"`` does."""
    xp = array_namespace(x)
    pairs = xp.reshape(x, (*x.shape[:-1], x.shape[-1] // 2, 2))
    c, s = cos[:, None, 0::2], sin[:, None, 0::2]
    first = pairs[..., 0] * c - pairs[..., 1] * s
    second = pairs[..., 0] * s + pairs[..., 1] * c
    return xp.reshape(xp.stack([first, second], axis=-1), x.shape)


def _rotate_half_wrong_sign(x, cos, sin):
    """``rotate_half(x) = [x2 | -x1]`` instead of ``[-x2 | x1]``: every pair turns the other way."""
    xp = array_namespace(x)
    half = x.shape[-1] // 2
    turned = xp.concat([x[..., half:], -x[..., :half]], axis=-1)
    return x * cos[:, None, :] + turned * sin[:, None, :]


def _qkv_contiguous(qkv, num_heads):
    """q, k, v read as the first, second and third N*D values of the qkv buffer (a raw-memory view) instead of
    the strided ``[N, 3, heads, d]`` view."""
    xp = array_namespace(qkv)
    n, three_d = qkv.shape
    flat = xp.reshape(qkv, (3, n, num_heads, three_d // (3 * num_heads)))
    return flat[0, ...], flat[1, ...], flat[2, ...]


def _rotary_left_in_natural_order(cos, sin, rows):
    return cos, sin


def _window_inverse_is_the_index(index):
    """The window permutation applied a second time instead of undone (right only for involutions)."""
    return np.asarray(index).copy()


def _window_index_keeping_empty_windows(grid_thw, spatial_merge_size=2, window_size=112, patch_size=14):
    """transformers' window list before ``unique_consecutive``: empty padded windows stay as 0-length segments."""
    from ..engine.window_index import window_index
    from ..grid import as_grid_thw

    w_index, _ = window_index(grid_thw, spatial_merge_size, window_size, patch_size)
    ws = window_size // spatial_merge_size // patch_size
    cu = [0]
    for t, h, w in as_grid_thw(grid_thw, spatial_merge_size).tolist():
        gh, gw = h // spatial_merge_size, w // spatial_merge_size
        rows_ = [min(ws, gh - r) for r in range(0, gh + ws - gh % ws, ws)]
        cols = [min(ws, gw - c) for c in range(0, gw + ws - gw % ws, ws)]
        for _ in range(t):
            for r in rows_:
                for c in cols:
                    cu.append(cu[-1] + max(r, 0) * max(c, 0) * spatial_merge_size ** 2)
    return w_index, np.asarray(cu, dtype=np.int32)


def _window_size_in_tokens(grid_thw, spatial_merge_size=2, window_size=112, patch_size=14):
    """``window_size`` read as tokens, not pixels (112 merged tokens a side: one window per image)."""
    from ..engine.window_index import window_index

    return window_index(grid_thw, spatial_merge_size, window_size, 1)


def _cu_seqlens_per_entry(grid_thw, spatial_merge_size=2):
    """One segment per image or video instead of one per frame pair: a video's frame pairs attend to each other."""
    from ..grid import as_grid_thw

    grid = as_grid_thw(grid_thw, spatial_merge_size)
    return np.concatenate([[0], np.cumsum(grid.prod(axis=1))]).astype(np.int32)


def _merge_2x2_column_major(x, merge_unit=4):
    """The 4 patches of a merge block concatenated as (0,0), (1,0), (0,1), (1,1)."""
    xp = array_namespace(x)
    n, d = x.shape
    blocks = xp.reshape(x, (n // merge_unit, merge_unit, d))
    order = [0, 2, 1, 3] if merge_unit == 4 else list(range(merge_unit))
    return xp.reshape(xp.stack([blocks[:, i, :] for i in order], axis=1), (n // merge_unit, merge_unit * d))


def _no_unpermute(merged, inverse):
    return merged


def _scale_by_width(q, k, v, plan, scale, chunk_bytes):
    """``1/sqrt(hidden_size)`` instead of ``1/sqrt(head_dim)``."""
    heads = q.shape[1]
    return KERNELS.attend(q, k, v, plan, scale / math.sqrt(heads), chunk_bytes)


def _layer_norm_for_rms(x, weight, eps=1e-6):
    from ..engine.norms import layer_norm

    return layer_norm(x, weight, 0.0, eps)


def _rms_norm_eps(eps):
    from ..engine.norms import rms_norm

    return lambda x, weight, _eps=1e-6: rms_norm(x, weight, eps)


def _rms_norm_fp16(x, weight, eps=1e-6):
    """RMSNorm with its reduction in float16, as an fp16 port computes it: overflows to inf once a row's
    squares sum past 65504 (real late-block activations), and loses precision before that."""
    xp = array_namespace(x)
    x16 = xp.astype(x, xp.float16)
    mean_square = xp.sum(x16 * x16, axis=-1, keepdims=True, dtype=xp.float16) / x.shape[-1]
    normed = x16 / xp.sqrt(mean_square + xp.asarray(eps, dtype=xp.float16))
    return xp.astype(normed, xp.float32) * weight


def _mlp_gate_up_swapped(K, x, w, cfg, tap):
    gate, up, _ = cfg.kind.mlp_names
    swapped = dict(w)
    for part in ("weight", "bias"):
        swapped[f"mlp.{gate}.{part}"], swapped[f"mlp.{up}.{part}"] = w[f"mlp.{up}.{part}"], w[f"mlp.{gate}.{part}"]
    return KERNELS.mlp_gated(K, x, swapped, cfg, tap)


def _inv_freq_bf16(head_dim, theta=10000.0):
    import ml_dtypes

    return rotary.inv_freq(head_dim, theta).astype(ml_dtypes.bfloat16).astype(np.float32)


def _smart_resize_c_round(height, width, factor=28, min_pixels=preprocessing.MIN_PIXELS,
                          max_pixels=preprocessing.MAX_PIXELS):
    """``smart_resize`` with C's ``round`` (ties away from zero) instead of Python's (ties to even)."""
    h = int(math.floor(height / factor + 0.5)) * factor
    w = int(math.floor(width / factor + 0.5)) * factor
    if h * w > max_pixels or h * w < min_pixels:
        return STEPS.smart_resize(height, width, factor, min_pixels, max_pixels)
    return h, w


def _to_rgb_dropping_alpha(image):
    return image.convert("RGB")


def _resize_bilinear(image, height, width):
    from PIL import Image

    return np.asarray(image.resize((width, height), Image.BILINEAR))


def _not_full(config, i):
    return False


def _full_off_by_one(config, i):
    return (i + 1) in config.fullatt_block_indexes


def _full_swapped(config, i):
    return i not in config.fullatt_block_indexes


# --- third generation (Qwen3-VL, Qwen3.5, Qwen4-Exp, Qwen3-Omni) ---------------------------------------------

def _position_taps_half_pixel(grid_thw, side, spatial_merge_size=2):
    """The position table resampled with ``align_corners=False`` (half-pixel centres, as ``F.interpolate``'s
    default and most image resizers): patch ``r`` of ``h`` reads table row ``(r + 0.5) * side / h - 0.5``."""
    from ..engine.rotary import rotary_position_ids
    from ..grid import as_grid_thw

    grid = as_grid_thw(grid_thw, spatial_merge_size)
    ids = rotary_position_ids(grid, spatial_merge_size)
    sizes = np.repeat(grid[:, 1:], grid.prod(axis=1), axis=0)

    def axis(index, size):
        source = np.maximum((index.astype(np.float32) + np.float32(0.5)) * np.float32(side) / size.astype(np.float32)
                            - np.float32(0.5), np.float32(0))
        floor = np.floor(source)
        frac = (source - floor).astype(np.float32)
        taps = np.clip(floor.astype(np.int64)[:, None] + np.arange(2), 0, side - 1)
        return taps, np.stack([np.float32(1) - frac, frac], axis=1).astype(np.float32)

    (rt, rw), (ct, cw) = axis(ids[:, 0], sizes[:, 0]), axis(ids[:, 1], sizes[:, 1])
    return (rt[:, :, None] * side + ct[:, None, :]).reshape(-1, 4), (rw[:, :, None] * cw[:, None, :]).reshape(-1, 4)


def _position_taps_direct(grid_thw, side, spatial_merge_size=2):
    """The table indexed directly at (row, col), clipped to the table, with no interpolation."""
    from ..engine.rotary import rotary_position_ids

    ids = np.clip(rotary_position_ids(grid_thw, spatial_merge_size), 0, side - 1)
    indices = np.zeros((len(ids), 4), dtype=np.int64)
    indices[:, 0] = ids[:, 0] * side + ids[:, 1]
    weights = np.zeros((len(ids), 4), dtype=np.float32)
    weights[:, 0] = 1
    return indices, weights


def _position_taps_raster(grid_thw, side, spatial_merge_size=2):
    """The interpolated table laid out in raster order (row by row) instead of the 2x2 merge-block order of the
    patch rows it is added to."""
    from ..engine.pos_embed import interpolation_indices_and_weights
    from ..grid import as_grid_thw

    idx, wts = interpolation_indices_and_weights(grid_thw, side, spatial_merge_size)
    grid, m = as_grid_thw(grid_thw, spatial_merge_size), spatial_merge_size
    order, start = [], 0
    for t, h, w in grid.tolist():  # merge-block position of each raster (row, col)
        r, c = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
        block = ((r // m) * (w // m) + c // m) * m * m + (r % m) * m + (c % m)
        for f in range(t):
            order.append(start + f * h * w + block.reshape(-1))
        start += t * h * w
    order = np.concatenate(order)
    return idx[order], wts[order]


def _position_embed_bf16(table, indices, weights):
    """The interpolation done in bf16: table, weights, products and sums rounded to bfloat16."""
    import ml_dtypes

    def bf16(a):
        return np.asarray(a, dtype=np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)

    t, w = bf16(np.asarray(table)), bf16(np.asarray(weights))
    out = None
    for k in range(indices.shape[1]):
        term = bf16(t[np.asarray(indices[:, k])] * w[:, k][:, None])
        out = term if out is None else bf16(out + term)
    xp = array_namespace(table)
    return xp.asarray(out)


def _no_rotation(x, cos, sin):
    return x


def _deepstack_reversed(config):
    """The DeepStack mergers paired with the blocks in reverse: block 8 through merger 2, block 24 through merger 0."""
    n = len(config.deepstack_visual_indexes)
    return {int(b): n - 1 - j for j, b in enumerate(config.deepstack_visual_indexes)}


def _deepstack_from_one(config):
    """deepstack_visual_indexes counted from 1: the features taken one block early (block 7 for index 8)."""
    return {int(b) - 1: j for j, b in enumerate(config.deepstack_visual_indexes) if int(b) >= 1}


def _layer_norm_fp16(x, weight, bias, eps=1e-6):
    """LayerNorm computed in float16 (an fp16 engine build): the mean and variance reduced in float16, which
    loses ~3 digits at once and overflows to inf once squares pass 65504."""
    xp = array_namespace(x)
    x16 = xp.astype(x, xp.float16)
    mean = xp.sum(x16, axis=-1, keepdims=True, dtype=xp.float16) / xp.asarray(x.shape[-1], dtype=xp.float16)
    centred = x16 - mean
    count = xp.asarray(x.shape[-1], dtype=xp.float16)
    var = xp.sum(centred * centred, axis=-1, keepdims=True, dtype=xp.float16) / count
    normed = centred / xp.sqrt(var + xp.asarray(eps, dtype=xp.float16))
    return xp.astype(normed, xp.float32) * weight + bias


# --- the zoo --------------------------------------------------------------------------------------------

BUGS: dict[str, Bug] = {b.name: b for b in [
    Bug("rope-interleaved", "RoPE with GPT-J (interleaved) pairs instead of NeoX halves",
        "xLLM-AI/xllm PR #2120 (rotary_mode='interleave' switched to adjacent pairs; fixed to 'half')",
        "blocks.0.attn.q", "q and k wrong from block 0 on; every later stage drifts",
        kernels=dict(rotate=_rotate_interleaved)),
    Bug("rotate-half-sign", "rotate_half with the sign on the wrong half",
        "no public report found (the rotate_half convention: notebook 3)", "blocks.0.attn.q",
        "positions rotate backwards: attention still local, values wrong",
        kernels=dict(rotate=_rotate_half_wrong_sign)),
    Bug("qkv-contiguous", "q, k, v read as consecutive N*D chunks of the qkv buffer",
        "awslabs/slapo PR #46, vllm-project/vllm PR #13687 (qkv layout assumed contiguous)",
        "blocks.0.attn.q", "q mixes q, k and v features of other tokens",
        kernels=dict(split_qkv=_qkv_contiguous)),
    Bug("rope-natural-order", "cos/sin left in natural order while the tokens are in window order",
        "no public report found (cos/sin follow the window order: notebook 4)", "blocks.0.attn.q",
        "each token rotated by another token's angles (same set of angles, other rows)",
        kernels=dict(window_order=_rotary_left_in_natural_order)),
    Bug("window-inverse", "window permutation applied again instead of its inverse (argsort)",
        "lablup/mlxcel #1596, PR #1601, PR #1603 (an object dropped from every description)",
        "embeddings", "tokens scrambled whenever the merged grid is not a multiple of the window",
        kernels=dict(window_inverse=_window_inverse_is_the_index)),
    Bug("window-empty-segments", "cu_window_seqlens keeps the empty windows of the padding",
        "no public report found (transformers drops empty windows with unique_consecutive: notebook 4)",
        "cu_window_seqlens",
        "zero-length segments: harmless in some kernels, NaN in others",
        kernels=dict(window_index=_window_index_keeping_empty_windows)),
    Bug("window-size-tokens", "window_size read as merged tokens instead of pixels",
        "ByteDance-Seed/VeOmni #1024", "window_index", "one window per image: window attention becomes full",
        kernels=dict(window_index=_window_size_in_tokens)),
    Bug("fullatt-off-by-one", "full-attention block indexes off by one (counted from 1)",
        "no public report found (fullatt_block_indexes count from 0: notebook 8)", "blocks.0.attn",
        "the wrong blocks see the whole image",
        kernels=dict(full_attention=_full_off_by_one)),
    Bug("fullatt-never", "no block uses full attention (block ids compared as strings)",
        "nvidia-cosmos/cosmos-rl #171", "blocks.1.attn", "windows everywhere: no global context",
        kernels=dict(full_attention=_not_full)),
    Bug("fullatt-swapped", "full and window segments passed the other way round",
        "alibaba/Pai-Megatron-Patch #552", "blocks.0.attn", "window blocks attend globally and vice versa",
        kernels=dict(full_attention=_full_swapped)),
    Bug("cu-seqlens-per-entry", "one attention segment per video instead of one per frame pair",
        "no public report found (one segment per frame pair: notebook 9)", "cu_seqlens",
        "a video's frame pairs attend to each other",
        kernels=dict(cu_seqlens=_cu_seqlens_per_entry)),
    Bug("scale-by-width", "attention scaled by 1/sqrt(hidden_size) instead of 1/sqrt(head_dim)",
        "no public report found (the scale is 1/sqrt(head_dim): notebook 6)", "blocks.0.attn", "attention too flat",
        kernels=dict(attend=_scale_by_width)),
    Bug("layernorm-for-rmsnorm", "LayerNorm where Qwen2.5-VL has RMSNorm (the other family's norm)",
        "baidu-baige/LoongForge PR #111 (Qwen2-VL and Qwen2.5-VL mergers share one norm mapping)",
        "blocks.0.norm1", "the mean is subtracted: every norm output shifts",
        kernels=dict(rms_norm=_layer_norm_for_rms)),
    Bug("rmsnorm-eps", "RMSNorm eps 1e-5 instead of 1e-6",
        "found by an independent port of this project (issue: porters' toolkit 2); vLLM passes the LLM's "
        "rms_norm_eps to the tower", "blocks.0.norm1",
        "a systematic scale error of ~5e-6: under any max-based float32 tolerance",
        kernels=dict(rms_norm=_rms_norm_eps(1e-5))),
    Bug("rmsnorm-fp16", "RMSNorm's sum of squares reduced in float16",
        "lablup/mlxcel PR #1601 (rows erased by the overflow), ggml-org/llama.cpp #17534 (fp16 overflow in block 31)",
        "blocks.0.norm1", "~1e-3 errors in every norm; inf and erased rows once real activations grow",
        kernels=dict(rms_norm=_rms_norm_fp16)),
    Bug("gate-up-swapped", "SiLU on the up branch: silu(up) * gate instead of silu(gate) * up",
        "ml-explore/mlx-lm PR #767", "blocks.0.mlp.gate", "MLP output wrong; norms and attention fine",
        kernels=dict(mlp_gated=_mlp_gate_up_swapped)),
    Bug("quick-gelu-as-gelu", "exact GELU where Qwen2-VL's MLP has QuickGELU",
        "sgl-project/sglang #2365 (QuickGELU variant and dtype casts deviated from transformers)",
        "blocks.0.mlp.act", "small errors (~1e-2) growing through the blocks", family="qwen2_vl",
        kernels=dict(activations={**KERNELS.activations, "quick_gelu": gelu})),
    Bug("merger-gelu-tanh", "tanh-approximate GELU in the merger instead of the exact erf GELU",
        "ggml-org/llama.cpp tools/mtmd qwen2vl (ggml_gelu), mistral.rs (candle gelu); the merger's exact GELU: "
        "notebook 7",
        "merger", "errors ~1e-3 in the output only", kernels=dict(merger_act=gelu_tanh)),
    Bug("concat-2x2-column-major", "the 2x2 patches concatenated column-major: (0,0), (1,0), (0,1), (1,1)",
        "no public report found (the 2x2 block order: notebooks 1 and 7)", "merger",
        "the merger mixes features of the wrong patches",
        kernels=dict(merge_2x2=_merge_2x2_column_major)),
    Bug("no-unpermute", "merged tokens left in window order",
        "no public report found (argsort(window_index) after the merger: notebook 7)", "embeddings",
        "tokens in window order: the LLM sees a scrambled image",
        kernels=dict(restore_order=_no_unpermute)),
    Bug("rope-bf16-frequencies", "rotary frequencies rounded to bf16",
        "no public report found (inv_freq in float32: notebook 3)",
        "cos", "angles off by up to 0.4%: far positions rotate wrongly",
        kernels=dict(inv_freq=_inv_freq_bf16)),
    Bug("smart-resize-c-round", "smart_resize rounding ties away from zero (C round) instead of to even",
        "NVIDIA/TensorRT-Edge-LLM #81, kekzl/imp PR #1166", "pixel_values",
        "another image size and token count (70 px -> 84 instead of 56)", needs="size70",
        steps=dict(smart_resize=_smart_resize_c_round)),
    Bug("rgba-black-background", "transparency dropped (black) instead of composited on white",
        "QwenLM/Qwen3-VL PR #661, vllm-project/vllm PR #18569", "pixel_values",
        "transparent regions become black", needs="rgba",
        steps=dict(to_rgb=_to_rgb_dropping_alpha)),
    Bug("resize-bilinear", "bilinear resize instead of PIL bicubic", "ikawrakow/ik_llama.cpp #1969",
        "pixel_values", "pixel values off by a few grey levels", steps=dict(resize=_resize_bilinear)),
    # -- the third generation: shown on the Qwen3-VL tower (DeepStack) or Qwen3.5's
    Bug("posembed-align-corners-false", "position table resampled with align_corners=False (half-pixel centres)",
        "ggml-org/llama.cpp #25781, sgl-project/sglang #34013 and #22052", "pos_embeds",
        "every position vector slightly off, most at the image borders", family="qwen3_vl",
        kernels=dict(position_interpolation=_position_taps_half_pixel)),
    Bug("posembed-no-interpolation", "position table indexed directly at (row, col), not interpolated",
        "hipfire #324 (table indexed without interpolation, 2-D RoPE missing)", "pos_embeds",
        "right only where the grid equals the table; large images reuse the table's last row", family="qwen3_vl",
        kernels=dict(position_interpolation=_position_taps_direct)),
    Bug("posembed-raster-order", "interpolated positions in raster order, not the 2x2 merge-block order of the rows",
        "no public report found (the merge-block order of the table: notebook 13)", "pos_embeds",
        "each patch gets a neighbour's position vector", family="qwen3_vl",
        kernels=dict(position_interpolation=_position_taps_raster)),
    Bug("posembed-bf16", "position-table interpolation computed in bf16",
        "lablup/mlxcel #1854", "pos_embeds", "~4e-3 relative error in every position vector", family="qwen3_vl",
        kernels=dict(position_embed=_position_embed_bf16)),
    Bug("rope-missing", "the 2-D RoPE left out because the learned table already gives positions",
        "hipfire #324 (table indexed without interpolation, 2-D RoPE missing)", "blocks.0.attn.q",
        "q and k unrotated: attention blind to relative position", family="qwen3_5",
        kernels=dict(rotate=_no_rotation)),
    Bug("block-gelu-exact", "exact erf GELU in the blocks where Qwen3 uses gelu_pytorch_tanh",
        "no public report found (the blocks' tanh GELU: notebook 13)", "blocks.0.mlp.act",
        "~1e-4 relative errors that grow through the blocks", family="qwen3_5",
        kernels=dict(activations={**KERNELS.activations, "gelu_pytorch_tanh": gelu})),
    Bug("merger-gelu-tanh-qwen3", "tanh GELU in Qwen3's mergers (DeepStack's too) instead of the exact GELU",
        "ggml-org/llama.cpp #29251", "deepstack.0", "errors ~1e-3 in the DeepStack features and the output",
        family="qwen3_vl", kernels=dict(merger_act=gelu_tanh)),
    Bug("deepstack-reversed", "DeepStack mergers paired with the blocks in reverse order",
        "Blaizzy/mlx-vlm #581 (DeepStack features in the wrong layout or order)", "deepstack.0",
        "each DeepStack feature from the wrong depth; the LLM adds deep features to shallow layers", family="qwen3_vl",
        kernels=dict(deepstack_taps=_deepstack_reversed)),
    Bug("deepstack-off-by-one", "deepstack_visual_indexes counted from 1: features taken one block early",
        "no public report found (indexes count from 0 like fullatt_block_indexes: notebook 13)", "deepstack.0",
        "DeepStack features one block too shallow; the embeddings are right", family="qwen3_vl",
        kernels=dict(deepstack_taps=_deepstack_from_one)),
    Bug("layernorm-fp16", "LayerNorm reduced in float16 (an fp16 engine build)",
        "NVIDIA/TensorRT-LLM #3223 (fp16 overflow in the vision tower)", "blocks.0.norm1",
        "~1e-3 errors in every norm; inf once activations grow", family="qwen3_5",
        kernels=dict(layer_norm=_layer_norm_fp16)),
]}
"""Every bug of the zoo by name."""

BRIDGE_BUGS = {
    "second-per-grid-int": ("second_per_grid_ts cast to int before the multiply: every fps above 2 collapses the "
                            "video's temporal positions", "EvolvingLMMs-Lab/lmms-eval #1393",
                            "qvlearn.bridge.get_rope_index positions (notebook 10)"),
    "mrope-sections-for-interleaved": ("Qwen3's interleaved M-RoPE rows (mrope_interleaved, sections [24, 20, 20]) "
                                       "read as contiguous sections: the LLM's h and w rows drive the wrong "
                                       "frequencies", "kekzl/imp PRs #1163-#1174",
                                       "qvlearn.bridge.mrope_frequency_rows(interleaved=True) (notebook 13)"),
    "text-after-vision": ("the text after a video continues at max+1 (transformers <= 4.57, vLLM) or at "
                          "s + max(H', W') (transformers 5.x)", "huggingface/transformers #45381 (notebook 10)",
                          "get_rope_index(text_after_vision=...)"),
}
"""Bugs of the bridge to the LLM: they live after the encoder, so no tap shows them; qvlearn.bridge covers both."""


def _bug(name: str) -> Bug:
    if name not in BUGS:
        raise InputError(f"no bug named {name!r}; the zoo has: {', '.join(BUGS)}")
    return BUGS[name]


def kernels(name: str | None, base: Kernels = KERNELS) -> Kernels:
    """The kernel table ``base`` with the bug ``name`` in it (``None``: ``base`` unchanged). Pass it to
    ``qvlearn.load_encoder(path, kernels=...)`` or ``encoder.with_kernels(...)``."""
    return base if name is None else base.replace(**_bug(name).kernels)


def steps(name: str | None, base: Steps = STEPS) -> Steps:
    """The preprocessing steps ``base`` with the bug ``name`` in them (unchanged for a bug of the encoder). Pass
    them to ``qvlearn.preprocess(..., steps=...)``."""
    import dataclasses

    return base if name is None else dataclasses.replace(base, **_bug(name).steps)


def sample_inputs(needs: str, seed: int = 1):
    """The images and videos that show a bug: ``batch`` (an image whose merged grid does not divide into
    windows, one whose grid does, and a 3-frame video), ``rgba`` (a half-transparent image), ``size70`` (a
    70 x 70 image, where rounding ties)."""
    rng = np.random.default_rng(seed)
    if needs == "batch":
        odd = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
        square = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
        video = [rng.integers(0, 256, (90, 130, 3), dtype=np.uint8) for _ in range(3)]
        return dict(images=[odd, square], videos=[video])
    if needs == "rgba":
        rgba = rng.integers(0, 256, (150, 230, 4), dtype=np.uint8)
        rgba[:, :115, 3] = 0
        return dict(images=[rgba])
    if needs == "size70":
        return dict(images=[rng.integers(0, 256, (70, 70, 3), dtype=np.uint8)])
    raise InputError(f"unknown input kind {needs!r}: batch, rgba or size70")


def traced(name: str | None, snapshot, inputs: dict, stages=("*",)) -> dict:
    """Preprocess ``inputs``, load ``snapshot`` and trace ``stages``, with the bug ``name`` in (``None``: no bug),
    as in a port that has the bug everywhere."""
    from .. import load_encoder, preprocess

    encoder = load_encoder(snapshot, kernels=kernels(name))
    pixel_values, grid_thw = preprocess(**inputs, steps=steps(name), family=encoder.family)
    return encoder.trace(pixel_values, grid_thw, to_numpy=True, stages=list(stages))
