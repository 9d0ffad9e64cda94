"""The checkers of the exercises: each takes the learner's function and raises :class:`NotYet` with a
message that says what is wrong and where to look. The expected values come from transformers / torch
(the reference), never from a stored answer.

    python -m exercises 03            check exercises/ex03_rope.py
    python -m exercises               check every exercise
"""

from __future__ import annotations

import math
import types
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch


class NotYet(AssertionError):
    """The exercise is not solved yet; the message says why."""


@dataclass(frozen=True)
class Exercise:
    key: str            # "03.2"
    function: str       # the name to write in exercises/exNN_*.py
    title: str
    check: Callable


EXERCISES: dict[str, Exercise] = {}


def exercise(key: str, function: str, title: str):
    def register(check):
        EXERCISES[key] = Exercise(key, function, title, check)
        return check
    return register


def call(fn, *args, **kwargs):
    """Run the learner's function; turn its failures into a message."""
    try:
        return fn(*args, **kwargs)
    except NotImplementedError:
        raise NotYet("not written yet: replace `raise NotImplementedError` with your code") from None
    except NotYet:
        raise
    except Exception as err:  # the learner's bug, reported in one line
        raise NotYet(f"your function raised {type(err).__name__}: {err}") from None


def as_array(value, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().numpy()
    if not isinstance(value, (np.ndarray, list, tuple, np.generic, int, float)):
        raise NotYet(f"{name} should be a NumPy array, got {type(value).__name__}")
    return np.asarray(value)


def expect_shape(got: np.ndarray, shape: tuple, what: str) -> None:
    if got.shape != tuple(shape):
        raise NotYet(f"{what} has shape {got.shape}, expected {tuple(shape)}")


def expect_close(got, want, what: str, rtol: float = 1e-5, hint: str = "") -> None:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    expect_shape(got, want.shape, what)
    err = np.abs(got - want).max() / max(np.abs(want).max(), 1e-30)
    if not err <= rtol:
        raise NotYet(f"{what} differs from the reference: relative error {err:.1e} > {rtol:.0e}"
                     + (f". {hint}" if hint else ""))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def hf_patchify(frames: np.ndarray, patch: int = 14, merge: int = 2, temporal: int = 2) -> np.ndarray:
    """transformers' own video patchify (its source, compiled) on frames [T, C, H, W]."""
    from qvlearn.tools.reference import _transformers_video_patchify

    rows, *_ = _transformers_video_patchify()(None, torch.from_numpy(np.ascontiguousarray(frames))[None],
                                              patch_size=patch, merge_size=merge, temporal_patch_size=temporal)
    return rows[0].numpy()


# --------------------------------------------------------------------------------------------------
# 01 · preprocessing
# --------------------------------------------------------------------------------------------------
def _smart_resize_side_c_style(n: int) -> tuple[int, int]:
    """smart_resize of an n x n image with C's round (half away from zero) instead of Python's."""
    from qvlearn.preprocessing import MAX_PIXELS, MIN_PIXELS

    side = max(28, math.floor(n / 28 + 0.5) * 28)
    if side * side > MAX_PIXELS:
        side = max(28, math.floor(n / math.sqrt(n * n / MAX_PIXELS) / 28) * 28)
    elif side * side < MIN_PIXELS:
        side = math.ceil(n * math.sqrt(MIN_PIXELS / (n * n)) / 28) * 28
    return side, side


@exercise("01.1", "first_c_rounding_mismatch", "the first square size where C-style rounding changes the token count")
def check_01_1(fn):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    got = call(fn)
    tokens = lambda hw: hw[0] * hw[1] // (28 * 28)
    want = next(n for n in range(1, 2000)
                if tokens(smart_resize(n, n, 28, 3136, 12845056)) != tokens(_smart_resize_side_c_style(n)))
    if not isinstance(got, (int, np.integer)):
        raise NotYet(f"return the side length n as an int, got {got!r}")
    if got != want:
        ref = smart_resize(int(got), int(got), 28, 3136, 12845056) if got > 0 else None
        raise NotYet(f"{got} is not it: at {got} x {got} transformers gives {ref} and C rounding gives "
                     f"{_smart_resize_side_c_style(int(got)) if got > 0 else None}. Look for n / 28 landing on x.5")


@exercise("01.2", "unpatchify", "pixel_values rows back to the frame pair they came from")
def check_01_2(fn):
    frames = rng(1).standard_normal((2, 3, 56, 84)).astype(np.float32)
    rows = hf_patchify(frames)                                   # transformers' own patchify
    got = as_array(call(fn, rows.copy(), np.array([1, 4, 6])), "the frames")
    expect_shape(got, frames.shape, "the frames")
    if np.array_equal(got, frames):
        return
    if np.array_equal(np.sort(got.reshape(-1)), np.sort(frames.reshape(-1))):
        if np.array_equal(got[::-1], frames):
            raise NotYet("the two frames are swapped: T is the second axis of a row's (C, T, 14, 14) layout")
        raise NotYet("every value is there, but in the wrong place: undo the merge-block order and the (C, T, 14, "
                     "14) layout of a row, in the reverse order of the processor's transpose")
    raise NotYet("values differ from the frames the rows were made from")


@exercise("01.3", "normalize", "uint8 [H, W, 3] -> float32 [3, H, W], bit-identical to Qwen2VLImageProcessorPil")
def check_01_3(fn):
    from transformers import Qwen2VLImageProcessorPil

    pixels = rng(2).integers(0, 256, (28, 56, 3), dtype=np.uint8)
    proc = Qwen2VLImageProcessorPil()
    image = np.moveaxis(pixels, -1, 0)
    want = proc.normalize(proc.rescale(image, 1 / 255), proc.image_mean, proc.image_std).astype(np.float32)
    got = as_array(call(fn, pixels.copy()), "the normalised image")
    expect_shape(got, want.shape, "the normalised image (channels first)")
    if got.dtype != np.float32:
        raise NotYet(f"return float32 (the model's dtype), got {got.dtype}")
    if not np.array_equal(got, want):
        ulp = np.abs(got.astype(np.float64) - want) / np.spacing(np.float32(1))
        if ulp.max() <= 8:
            raise NotYet(f"close but not bit-identical (up to {ulp.max():.0f} ulp, {100 * (ulp > 0).mean():.0f}% of "
                         f"values): rescale x / 255 in float64, cast to float32, then normalise in float32")
        raise NotYet("values differ from the reference: (x / 255 - mean) / std with the OpenAI CLIP mean and std")


# --------------------------------------------------------------------------------------------------
# 02 · patch embedding
# --------------------------------------------------------------------------------------------------
def _conv3d_reference(rows: np.ndarray, weight: np.ndarray) -> np.ndarray:
    x = torch.from_numpy(rows).view(-1, 3, 2, 14, 14)
    return torch.nn.functional.conv3d(x, torch.from_numpy(weight), stride=(2, 14, 14)).view(len(rows), -1).numpy()


@exercise("02.1", "conv3d_as_matmul", "the Conv3d patch embedding as one matmul")
def check_02_1(fn):
    r = rng(3)
    rows = r.standard_normal((12, 1176)).astype(np.float32)
    weight = r.standard_normal((32, 3, 2, 14, 14)).astype(np.float32) / 30
    want = _conv3d_reference(rows, weight)
    got = as_array(call(fn, rows, weight), "the embeddings")
    if got.shape == want.T.shape and got.shape != want.shape:
        raise NotYet(f"shape {got.shape} is transposed: the output has one row per input row (one patch per row)")
    expect_close(got, want, "the embeddings",
                 hint="flatten the weight to [out, 3*2*14*14] in its own (C, T, h, w) order")


@exercise("02.2", "weight_for_tc_rows", "the weight matrix for a port whose rows are laid out (T, C, 14, 14)")
def check_02_2(fn):
    r = rng(4)
    rows = r.standard_normal((10, 1176)).astype(np.float32)                      # (C, T, 14, 14) rows
    weight = r.standard_normal((24, 3, 2, 14, 14)).astype(np.float32) / 30
    want = _conv3d_reference(rows, weight)
    rows_tc = rows.reshape(-1, 3, 2, 14, 14).transpose(0, 2, 1, 3, 4).reshape(10, 1176)
    matrix = as_array(call(fn, weight.copy()), "the matrix")
    expect_shape(matrix, (24, 1176), "the matrix")
    if np.allclose(matrix, weight.reshape(24, -1)):
        raise NotYet("that is the weight for (C, T, 14, 14) rows; the port's rows put T before C, and the weight's "
                     "columns must follow the rows' layout")
    expect_close(rows_tc @ matrix.T, want, "rows_tc @ matrix.T",
                 hint="each column of the matrix must meet the pixel it multiplies")


# --------------------------------------------------------------------------------------------------
# 03 · 2-D RoPE
# --------------------------------------------------------------------------------------------------
@exercise("03.1", "rope_position_ids", "(row, col) of every patch, in 2x2 merge-block order")
def check_03_1(fn):
    from transformers import vision_utils as vu

    for h, w in [(4, 6), (6, 2), (2, 2)]:
        want = vu.get_vision_position_ids(torch.tensor([[1, h, w]]), 2).numpy()
        got = as_array(call(fn, h, w), "the ids")
        expect_shape(got, want.shape, f"the ids of a {h}x{w} grid")
        if np.array_equal(got, want):
            continue
        if np.array_equal(got, np.stack(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"), -1).reshape(-1, 2)):
            raise NotYet(f"{h}x{w}: those are raster-order ids; the patches come in 2x2 merge-block order")
        if np.array_equal(got, want[:, ::-1]):
            raise NotYet(f"{h}x{w}: columns swapped: column 0 is the row, column 1 the column")
        raise NotYet(f"{h}x{w}: ids differ from transformers' get_vision_position_ids (first rows: yours "
                     f"{got[:4].tolist()}, reference {want[:4].tolist()})")


def _rope_half(x, angles):
    cos, sin = np.cos(np.concatenate([angles, angles], -1)), np.sin(np.concatenate([angles, angles], -1))
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], -1)
    return x * cos + rotated * sin


def _rope_interleaved(x, angles):
    out = x.copy()
    c, s = np.cos(angles), np.sin(angles)
    out[..., 0::2] = x[..., 0::2] * c - x[..., 1::2] * s
    out[..., 1::2] = x[..., 1::2] * c + x[..., 0::2] * s
    return out


@exercise("03.2", "interleave_permutation", "permute q/k weight rows so an interleaved-RoPE port matches")
def check_03_2(fn):
    d, n, width = 80, 9, 40
    r = rng(5)
    wq, wk = (r.standard_normal((d, width)) for _ in range(2))
    x = r.standard_normal((n, width))
    angles = r.uniform(0, 6, (n, d // 2))
    q, k = _rope_half(x @ wq.T, angles), _rope_half(x @ wk.T, angles)
    want = q @ k.T
    perm = as_array(call(fn, d), "the permutation").astype(int)
    if sorted(perm.tolist()) != list(range(d)):
        raise NotYet(f"return a permutation of range({d}) (each row index once)")
    if np.array_equal(perm, np.arange(d)):
        raise NotYet("that is the identity: with the rows as they are, the two conventions rotate different channel "
                     "pairs together, so the attention scores differ (notebook 3)")
    right = np.empty(d, dtype=int)
    right[0::2], right[1::2] = np.arange(d // 2), np.arange(d // 2) + d // 2
    if np.array_equal(perm, np.argsort(right)):
        raise NotYet("that is the inverse of the permutation asked for: it says where each reference row goes, but "
                     "W[p] needs, for each port row, the reference row it comes from")
    qi, ki = _rope_interleaved(x @ wq[perm].T, angles), _rope_interleaved(x @ wk[perm].T, angles)
    if not np.allclose(qi @ ki.T, want, rtol=1e-9, atol=1e-9):
        raise NotYet("attention scores differ: the two conventions rotate different channel pairs together "
                     "(notebook 3); list which pairs each one rotates, then decide where each reference row must go")


# --------------------------------------------------------------------------------------------------
# 04 · windows
# --------------------------------------------------------------------------------------------------
@exercise("04.1", "cu_seqlens", "cumulative segment boundaries of a batch of grids")
def check_04_1(fn):
    from transformers import vision_utils as vu

    grids = [(1, 4, 6), (3, 2, 4), (2, 6, 6)]
    want = vu.get_vision_cu_seqlens(torch.tensor(grids)).numpy()
    got = as_array(call(fn, grids), "cu_seqlens")
    if got.shape == (len(grids) + 1,):
        raise NotYet("one boundary per entry: but a video's frame pairs are separate segments")
    if got.shape == (len(want) - 1,):
        raise NotYet("start with 0: cu_seqlens has one more value than there are segments")
    expect_shape(got, want.shape, "cu_seqlens")
    if not np.array_equal(got, want):
        raise NotYet(f"cu_seqlens {got.tolist()} differs from transformers' {want.tolist()}")


@exercise("04.2", "window_index", "the window index of two images, for any window size")
def check_04_2(fn):
    from transformers import vision_utils as vu

    grids = [(1, 12, 20), (1, 8, 10)]
    want_index, want_cu = (t.numpy() for t in vu.get_vision_window_index(torch.tensor(grids), 2, 112, 14))
    got = call(fn, grids)
    if not (isinstance(got, tuple) and len(got) == 2):
        raise NotYet("return a pair (window_index, cu_window_seqlens)")
    index, cu = as_array(got[0], "window_index"), as_array(got[1], "cu_window_seqlens")
    first = 6 * 10
    if index.shape == want_index.shape and np.array_equal(index[:first], want_index[:first]) \
            and np.array_equal(index[first:] + first, want_index[first:]):
        raise NotYet("the second image's indices start at 0 again: offset them by the merged tokens of the images "
                     "before")
    if not np.array_equal(index, want_index):
        first = np.flatnonzero(index[:len(want_index)] != want_index[:len(index)])[:5].tolist()
        raise NotYet(f"window_index differs from transformers' (first differences at {first})")
    if not np.array_equal(cu, want_cu):
        raise NotYet(f"window_index is right; cu_window_seqlens {cu.tolist()} differs from {want_cu.tolist()} "
                     f"(it counts patch rows, continues across images and has no empty windows)")
    big_index, big_cu = (t.numpy() for t in vu.get_vision_window_index(torch.tensor(grids), 2, 224, 14))
    got = call(fn, grids, 224)
    if not (isinstance(got, tuple) and len(got) == 2):
        raise NotYet("return a pair (window_index, cu_window_seqlens)")
    if np.array_equal(as_array(got[0], "window_index"), want_index):
        raise NotYet("with window_size=224 you return the 112-px windows: the window side follows window_size")
    if not (np.array_equal(as_array(got[0], "window_index"), big_index)
            and np.array_equal(as_array(got[1], "cu_window_seqlens"), big_cu)):
        raise NotYet("with window_size=224 (windows of 8x8 merged tokens) the result differs from transformers'")


# --------------------------------------------------------------------------------------------------
# 05 · norms and activations
# --------------------------------------------------------------------------------------------------
@exercise("05.1", "rms_norm_sharded", "RMSNorm with the channels split over devices (tensor parallel)")
def check_05_1(fn):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRMSNorm

    r = rng(6)
    x = (r.standard_normal((5, 96)) * 1e-3 + 2e-3).astype(np.float32)     # small values: eps matters
    weight = r.standard_normal(96).astype(np.float32)
    norm = Qwen2_5_VLRMSNorm(96, eps=1e-6)
    with torch.no_grad():
        norm.weight.copy_(torch.from_numpy(weight))
        want = norm(torch.from_numpy(x)).numpy()
    cuts = [0, 32, 80, 96]                                                # three devices, unequal shares
    shards = [x[:, a:b].copy() for a, b in zip(cuts[:-1], cuts[1:])]
    pieces = [weight[a:b].copy() for a, b in zip(cuts[:-1], cuts[1:])]
    got = call(fn, shards, pieces)
    if not isinstance(got, (list, tuple)) or len(got) != 3:
        raise NotYet("return one normalised shard per input shard (a list of 3 arrays)")
    got = np.concatenate([as_array(g, "a shard") for g in got], axis=-1)
    expect_shape(got, want.shape, "the concatenated shards")
    local = np.concatenate([s / np.sqrt((s * s).mean(-1, keepdims=True) + 1e-6) * w
                            for s, w in zip(shards, pieces)], -1)
    if np.allclose(got, local, rtol=1e-4):
        raise NotYet("each shard normalised by its own mean square: the root mean square is over all D channels, "
                     "so the devices must share their partial sums")
    expect_close(got, want, "sharded RMSNorm", rtol=1e-5)


@exercise("05.2", "quick_gelu", "Qwen2-VL's QuickGELU")
def check_05_2(fn):
    from transformers.activations import ACT2FN

    x = np.linspace(-6, 6, 97, dtype=np.float32)
    want = ACT2FN["quick_gelu"](torch.from_numpy(x)).numpy()
    got = as_array(call(fn, x.copy()), "QuickGELU")
    expect_shape(got, want.shape, "QuickGELU")
    exact = torch.nn.functional.gelu(torch.from_numpy(x)).numpy()
    if np.allclose(got, exact, rtol=1e-5, atol=1e-6):
        raise NotYet("that is the exact (erf) GELU; QuickGELU is another approximation of it (notebook 5)")
    expect_close(got, want, "QuickGELU", hint="x * sigmoid(1.702 x)")


@exercise("05.3", "swiglu_mlp", "Qwen2.5-VL's gated MLP")
def check_05_3(fn):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLMLP

    r = rng(7)
    config = types.SimpleNamespace(hidden_size=16, intermediate_size=40, hidden_act="silu")
    mlp = Qwen2_5_VLMLP(config, bias=True)
    params = {}
    for name, p in mlp.named_parameters():       # each parameter its own values: a gate/up swap shows
        p.data = torch.from_numpy(r.standard_normal(tuple(p.shape)).astype(np.float32) / 4)
        params[name.replace(".", "_")] = p.data.numpy().copy()
    x = r.standard_normal((6, 16)).astype(np.float32)
    want = mlp(torch.from_numpy(x)).detach().numpy()
    got = as_array(call(fn, x.copy(), **params), "the MLP output")
    swapped = dict(params, gate_proj_weight=params["up_proj_weight"], up_proj_weight=params["gate_proj_weight"],
                   gate_proj_bias=params["up_proj_bias"], up_proj_bias=params["gate_proj_bias"])
    silu = lambda v: v / (1 + np.exp(-v))
    as_swapped = (silu(x @ swapped["gate_proj_weight"].T + swapped["gate_proj_bias"])
                  * (x @ swapped["up_proj_weight"].T + swapped["up_proj_bias"])) @ params["down_proj_weight"].T \
        + params["down_proj_bias"]
    if got.shape == want.shape and np.allclose(got, as_swapped, rtol=1e-4, atol=1e-5):
        raise NotYet("gate and up are swapped: the activation (SiLU) goes on gate_proj's output, which multiplies "
                     "up_proj's")
    expect_close(got, want, "the MLP output", hint="down(silu(gate(x)) * up(x)), each Linear x @ W.T + b")


# --------------------------------------------------------------------------------------------------
# 06 · attention
# --------------------------------------------------------------------------------------------------
def _sdpa_segments(q, k, v, cu, pad_to=None):
    """torch's attention per segment; ``pad_to``: each segment's keys padded with zero rows up to that length and
    *not* masked (what a port that forgets the padding mask computes)."""
    out = np.empty_like(q)
    for a, b in zip(cu[:-1], cu[1:]):
        t = [torch.from_numpy(np.ascontiguousarray(z[a:b].transpose(1, 0, 2))) for z in (q, k, v)]
        if pad_to is not None:
            t[1:] = [torch.nn.functional.pad(z, (0, 0, 0, pad_to - (b - a))) for z in t[1:]]
        out[a:b] = torch.nn.functional.scaled_dot_product_attention(*t).numpy().transpose(1, 0, 2)
    return out


@exercise("06.1", "padded_batch_attention", "segments padded into one batch with a mask, as SDPA ports run them")
def check_06_1(fn):
    r = rng(8)
    q, k, v = (r.standard_normal((40, 2, 16)).astype(np.float32) for _ in range(3))
    cu = np.array([0, 12, 28, 40])
    want = _sdpa_segments(q, k, v, cu)
    got = as_array(call(fn, q.copy(), k.copy(), v.copy(), cu.copy()), "the output")
    expect_shape(got, want.shape, "the output")
    if not np.all(np.isfinite(got)):
        raise NotYet("the output holds NaN or Inf: a padded row or key must never reach the softmax's sum")
    if np.allclose(got, _sdpa_segments(q, k, v, np.array([0, 40])), rtol=1e-4, atol=1e-5):
        raise NotYet("tokens attend across segments: each segment cu[i]:cu[i+1] attends only to itself")
    padded_keys = _sdpa_segments(q, k, v, cu, pad_to=16)
    if np.allclose(got, padded_keys, rtol=1e-4, atol=1e-5):
        raise NotYet("the padding keys take part in the softmax: mask them out (each query sees only its segment's "
                     "real keys)")
    expect_close(got, want, "padded batch attention")


@exercise("06.2", "chunked_attention", "full attention over key blocks with an online softmax, memory-bounded")
def check_06_2(fn):
    import tracemalloc

    r = rng(9)
    n, heads, d, chunk = 1536, 2, 16, 128
    q, k, v = (r.standard_normal((n, heads, d)).astype(np.float32) for _ in range(3))
    want = _sdpa_segments(q, k, v, np.array([0, n]))
    tracemalloc.start()
    try:
        got = as_array(call(fn, q, k, v, chunk), "the output")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    expect_close(got, want, "chunked attention", hint="keep a running max m, a running sum l and an output "
                 "accumulator per query; rescale them by exp(m_old - m_new) for each key block")
    full = heads * n * n * 4
    # real scores reach far beyond N(0, 1) (notebook 6 shows q.k near 100 in late blocks): exp must not overflow
    large = as_array(call(fn, q * np.float32(30), k, v, chunk), "the output for large scores")
    if not np.all(np.isfinite(large)):
        raise NotYet("right for small scores, but with scores 30x larger your output holds NaN or Inf: exp overflows "
                     "float32 beyond about 88. An online softmax needs the guard that keeps every exp at most 1")
    expect_close(large, _sdpa_segments(q * np.float32(30), k, v, np.array([0, n])), "chunked attention on large scores")
    if peak > full / 2:
        raise NotYet(f"the result is right but the peak memory was {peak / 2**20:.1f} MiB; the full score matrix is "
                     f"{full / 2**20:.1f} MiB: never build [heads, N, N], only [heads, N, chunk] at a time")


# --------------------------------------------------------------------------------------------------
# 07 · merger
# --------------------------------------------------------------------------------------------------
@exercise("07.1", "raster_to_merge_order", "patch rows of a raster-order port -> the 2x2 merge-block order")
def check_07_1(fn):
    h, w, d = 4, 6, 3
    raster = np.arange(h * w, dtype=np.float32)                   # each patch's raster id, as pixels
    image = np.repeat(np.repeat(raster.reshape(h, w), 14, 0), 14, 1)
    frames = np.broadcast_to(image, (2, 3, h * 14, w * 14))
    order = hf_patchify(frames)[:, 0].astype(int)                  # raster id of each pixel_values row
    x = rng(10).standard_normal((h * w, d)).astype(np.float32)
    got = as_array(call(fn, x.copy(), h, w), "the rows")
    expect_shape(got, x.shape, "the rows")
    if np.array_equal(got, x):
        raise NotYet("the rows are unchanged: reorder them so 4 consecutive rows form one 2x2 block")
    if not np.array_equal(got, x[order]):
        raise NotYet(f"row order differs from transformers' patch order (reference raster ids {order[:8].tolist()}...)")


@exercise("07.2", "patch_merger", "Qwen2.5-VL's merger: RMSNorm, 2x2 concat, MLP with exact GELU")
def check_07_2(fn):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLPatchMerger

    r = rng(11)
    merger = Qwen2_5_VLPatchMerger(dim=12, context_dim=8)
    params = {}
    for name, p in merger.named_parameters():
        p.data = torch.from_numpy(r.standard_normal(tuple(p.shape)).astype(np.float32) / 3)
        params[name.replace(".", "_")] = p.data.numpy().copy()
    x = r.standard_normal((16, 8)).astype(np.float32)
    want = merger(torch.from_numpy(x)).detach().numpy()
    got = as_array(call(fn, x.copy(), **params), "the merged tokens")
    if got.shape != want.shape:
        raise NotYet(f"shape {got.shape}, expected {want.shape}: 4 consecutive rows become one token")
    expect_close(got, want, "the merged tokens",
                 hint="RMSNorm over the 8-wide rows first (eps 1e-6), then reshape to [-1, 32], "
                      "mlp_0, exact (erf) GELU, mlp_2")


# --------------------------------------------------------------------------------------------------
# 08 · the whole encoder
# --------------------------------------------------------------------------------------------------
def _window_case():
    from transformers import vision_utils as vu

    index, _ = vu.get_vision_window_index(torch.tensor([[1, 12, 20]]), 2, 112, 14)
    x = rng(12).standard_normal((240, 5)).astype(np.float32)
    return index.numpy(), x


@exercise("08.1", "to_window_order", "patch rows -> window order (4 rows per merged token)")
def check_08_1(fn):
    index, x = _window_case()
    t = torch.from_numpy(x)                                     # transformers' forward, written the same way
    want = t.reshape(len(t) // 4, 4, -1)[torch.from_numpy(index)].reshape(len(t), -1).numpy()
    got = as_array(call(fn, x.copy(), index.copy()), "the rows")
    if got.shape == (len(index), x.shape[1]):
        raise NotYet("window_index numbers merged tokens, not patch rows: move rows in groups of 4")
    expect_shape(got, want.shape, "the rows")
    if not np.array_equal(got, want):
        raise NotYet("rows differ from transformers' window order")


@exercise("08.2", "from_window_order", "merged tokens in window order -> natural order")
def check_08_2(fn):
    index, _ = _window_case()
    tokens = rng(13).standard_normal((len(index), 7)).astype(np.float32)
    want = tokens[torch.argsort(torch.from_numpy(index)).numpy()]
    got = as_array(call(fn, tokens.copy(), index.copy()), "the tokens")
    expect_shape(got, want.shape, "the tokens")
    if np.array_equal(got, tokens[index]):
        raise NotYet("that applies the permutation a second time; the tokens must come back, not move again")
    if not np.array_equal(got, want):
        raise NotYet("tokens differ from transformers' natural order (its reverse_indices)")


# --------------------------------------------------------------------------------------------------
# 10 · the bridge
# --------------------------------------------------------------------------------------------------
@exercise("10.1", "rope_index_images", "Qwen2-VL M-RoPE positions [3, S] for text and images")
def check_10_1(fn):
    from qvlearn.bridge import IMAGE_TOKEN_ID, VISION_END_TOKEN_ID, VISION_START_TOKEN_ID, expand_vision_pads
    from qvlearn.tools.reference import reference_get_rope_index

    grids = np.array([[1, 4, 6], [1, 8, 2]])
    ids = ([5, 6, 7, VISION_START_TOKEN_ID, IMAGE_TOKEN_ID, VISION_END_TOKEN_ID, 8, 9]
           + [VISION_START_TOKEN_ID, IMAGE_TOKEN_ID, VISION_END_TOKEN_ID, 10])
    expanded = np.asarray(expand_vision_pads(ids, grids))
    types_ = (expanded == IMAGE_TOKEN_ID).astype(np.int64)
    want, _ = reference_get_rope_index("qwen2_vl")(torch.from_numpy(expanded)[None], torch.from_numpy(types_)[None],
                                                    torch.from_numpy(grids), None)
    want = want[:, 0].numpy()
    got = as_array(call(fn, expanded.copy(), grids.copy()), "the positions")
    expect_shape(got, want.shape, "the positions")
    bad = np.flatnonzero((got != want).any(0))
    if len(bad):
        i = int(bad[0])
        kind = "an image token" if expanded[i] == IMAGE_TOKEN_ID else "a text token"
        raise NotYet(f"first difference at token {i} ({kind}): yours {got[:, i].tolist()}, transformers "
                     f"{want[:, i].tolist()}. After an image, text continues at start + max(h, w) / 2")


@exercise("10.2", "omni_temporal_positions", "Qwen2.5-Omni video temporal offsets, exactly as its thinker")
def check_10_2(fn):
    from transformers import BatchFeature

    for sec in (1 / 3, 2 / 3, 0.5, 1.0, 0.08):                         # 0.08 s: a 25-fps video
        sec32 = BatchFeature({"s": [sec]}, tensor_type="pt")["s"][0]
        want = (torch.arange(13) * sec32.float() * 25).long().numpy()     # the thinker's get_rope_index
        got = as_array(call(fn, 13, sec), "the offsets")
        expect_shape(got, want.shape, "the offsets")
        if not np.array_equal(got, want):
            vl_order = (torch.arange(13) * (25 * sec32)).long().numpy()
            f64 = np.floor(np.arange(13) * sec * 25).astype(int)
            hint = (" (that is Qwen2.5-VL's order, arange * (25 * seconds): Omni multiplies by the seconds first)"
                    if np.array_equal(got, vl_order) else
                    " (that is the float64 result: the thinker computes in float32)" if np.array_equal(got, f64)
                    else "")
            raise NotYet(f"{sec:.4f} s per frame pair: yours {got.tolist()}, transformers {want.tolist()}{hint}")


# --------------------------------------------------------------------------------------------------
# 09 · videos and batches
# --------------------------------------------------------------------------------------------------
@exercise("09.1", "video_grid", "a video's grid_thw row, odd frame counts included")
def check_09_1(fn):
    from qvlearn.tools.reference import reference_video

    r = rng(91)
    for n in (1, 2, 3, 5, 8):
        frames = [r.integers(0, 256, (56, 84, 3), dtype=np.uint8) for _ in range(n)]
        want = tuple(int(v) for v in reference_video(frames)[1][0])
        got = tuple(int(v) for v in as_array(call(fn, n, 56, 84), "the grid").reshape(-1))
        if got != want:
            hint = (" an odd frame is not dropped: the processor repeats the last frame to make a pair"
                    if n % 2 and got[0] == n // 2 else "")
            raise NotYet(f"{n} frames of 56x84 px: got grid {got}, transformers makes {want}.{hint}")


@exercise("09.2", "frame_pair_segments", "the attention segment of every patch row in a batch")
def check_09_2(fn):
    from transformers import vision_utils as vu

    grids = [(1, 4, 6), (3, 2, 4), (2, 6, 6)]
    cu = vu.get_vision_cu_seqlens(torch.tensor(grids)).numpy()
    want = np.repeat(np.arange(len(cu) - 1), np.diff(cu))
    got = as_array(call(fn, np.array(grids)), "the segment ids")
    expect_shape(got, want.shape, "the segment ids")
    if len(np.unique(got)) == len(grids):
        raise NotYet("one segment per entry: but the frame pairs of a video do not attend to each other")
    if not np.array_equal(np.unique(got, return_inverse=True)[1].reshape(-1), want):
        raise NotYet("rows are grouped differently from transformers' cu_seqlens")
    if not np.array_equal(got, want):
        raise NotYet("the rows are grouped right, but a segment's index is its place in cu_seqlens: 0 for the first "
                     "segment, then 1, 2, ... in the order of the rows")


# --------------------------------------------------------------------------------------------------
# 11 · precision
# --------------------------------------------------------------------------------------------------
@exercise("11.1", "round_to_bf16", "float32 -> the nearest bf16, with integer operations on the bits")
def check_11_1(fn):
    r = rng(111)
    x = np.concatenate([r.standard_normal(2000).astype(np.float32) * 10,
                        # exact ties: the low 16 bits 0x8000, with even and odd kept parts
                        (np.arange(1, 200, dtype=np.uint32) << 16 | 0x8000).view(np.float32),
                        np.array([0.0, -0.0, 1.0, -3.5, 65504.0, 1e-30], np.float32)])
    want = torch.from_numpy(x).to(torch.bfloat16).float().numpy()
    got = as_array(call(fn, x.copy()), "the rounded values").astype(np.float32)
    expect_shape(got, want.shape, "the rounded values")
    if np.array_equal(got, (x.view(np.uint32) & 0xFFFF0000).view(np.float32)):
        raise NotYet("that truncates (drops the low 16 bits); bf16 rounds to nearest")
    wrong = np.nonzero(got.view(np.uint32) != want.view(np.uint32))[0]
    if len(wrong):
        ties = (x.view(np.uint32) & 0xFFFF) == 0x8000
        kind = "exact ties (low bits 0x8000): round half to even" if ties[wrong].all() else "some values"
        raise NotYet(f"{len(wrong)} of {len(x)} values round differently from torch's bfloat16 cast: {kind}")


@exercise("11.2", "first_fp16_overflow", "the first block whose output overflows an fp16 norm")
def check_11_2(fn):
    width = 1280
    rms = np.array([0.5, 1.0, 2.0, 4.0, 6.0, 7.0, 7.2, 7.3, 9.0, 30.0])
    squares = torch.from_numpy(np.full((len(rms), width), 1.0) * rms[:, None]).to(torch.float16)
    sums = (squares * squares).sum(-1)                              # what an fp16 port reduces
    want = int(np.nonzero(torch.isinf(sums).numpy())[0][0])
    got = call(fn, rms.copy(), width)
    if got != want:
        raise NotYet(f"got block {got}; torch's fp16 sum of squares of a {width}-wide row first overflows after "
                     f"block {want}: fp16 holds at most 65504")
    if call(fn, rms[:3].copy(), width) != -1:
        raise NotYet("blocks whose squares stay below fp16's limit must give -1")


# --------------------------------------------------------------------------------------------------
# 12 · debugging a port
# --------------------------------------------------------------------------------------------------
@exercise("12.1", "scale_error", "the systematic scale error that catches a wrong eps")
def check_12_1(fn):
    r = rng(121)
    b = r.standard_normal((64, 80)).astype(np.float32)
    for factor in (1.0, 1.0 + 4.5e-6, 0.5, 2.0):
        got = float(call(fn, (b * factor).astype(np.float32), b))
        if not abs(got - abs(factor * 1.0 - 1)) <= 1e-6 * max(1.0, abs(factor)):
            raise NotYet(f"for a = {factor} x b the scale error is {abs(factor - 1):.3g}, got {got:.3g}")
    noisy = b + 1e-3 * r.standard_normal(b.shape).astype(np.float32)   # 1e-3 of noise, no systematic scale
    if not float(call(fn, noisy, b)) < 1e-4:
        raise NotYet("random noise of size 1e-3 has almost no systematic scale, but yours reports "
                     f"{float(call(fn, noisy, b)):.1e}: the scale error is not a max-based error")
    ones = np.ones(1024, np.float32)   # one value one float32 ulp above 1: a scale error of 2**-23 / 1024
    ulp = ones.copy()
    ulp[0] = np.nextafter(np.float32(1), np.float32(2))
    got = float(call(fn, ulp, ones))
    if not abs(got - 2.0 ** -23 / 1024) <= 1e-3 * 2.0 ** -23 / 1024:
        raise NotYet(f"one of 1024 values one float32 ulp off gives a scale error of {2.0 ** -23 / 1024:.3g}, got "
                     f"{got:.3g}: float32 sums cannot hold it (1024 + 2**-23 is 1024 in float32)")


@exercise("12.2", "locate_bug", "read compare's verdict: the stage where an injected bug lives")
def check_12_2(fn):
    from qvlearn.tools import bugs
    from qvlearn.tools.cache import default_model

    path = default_model("tiny-qwen2.5-vl", seed=0, log=lambda *a: None)
    inputs = bugs.sample_inputs("batch")
    golden = bugs.traced(None, path, inputs)
    for name in ("rope-interleaved", "window-inverse", "rmsnorm-eps", "gate-up-swapped"):
        port = bugs.traced(name, path, inputs)
        got = call(fn, dict(port), dict(golden))
        if got != bugs.BUGS[name].stage:
            raise NotYet(f"a port with one bug injected: got {got!r}, but the first stage beyond tolerance is "
                         f"elsewhere (look at every stage in forward order, and at the scale error too)")


# --------------------------------------------------------------------------------------------------
# 13 · the third generation
# --------------------------------------------------------------------------------------------------
@exercise("13.1", "position_table_taps", "bilinear, corner-aligned taps of the learned position table")
def check_13_1(fn):
    import torch.nn.functional as F

    side, dim = 8, 6
    table = rng(131).standard_normal((side * side, dim)).astype(np.float32)
    for h, w in ((12, 20), (4, 6), (1, 5), (8, 8)):
        idx, wts = call(fn, h, w, side)
        idx, wts = as_array(idx, "the indices").astype(np.int64), as_array(wts, "the weights")
        expect_shape(idx, (h * w, 4), "the indices")
        got = (table[idx] * wts[..., None]).sum(1)
        grid = torch.from_numpy(table).reshape(side, side, dim).permute(2, 0, 1)[None]
        want = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=True)[0]
        want = want.permute(1, 2, 0).reshape(-1, dim)
        loose = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)[0]
        loose = loose.permute(1, 2, 0).reshape(-1, dim)
        if np.allclose(got, loose.numpy(), atol=1e-5) and not np.allclose(got, want.numpy(), atol=1e-5):
            raise NotYet("those are half-pixel (align_corners=False) coordinates; Qwen3 aligns the corners")
        expect_close(got, want.numpy(), f"the interpolated table at a {h}x{w} grid", rtol=1e-5)


@exercise("13.2", "interleaved_mrope_rows", "which position row drives each LLM rotary frequency (interleaved)")
def check_13_2(fn):
    from qvlearn.tools.reference import reference_mrope_rows

    for section, head_dim in (([24, 20, 20], 128), ([11, 11, 10], 64)):
        want = reference_mrope_rows(section, head_dim)
        got = as_array(call(fn, list(section), head_dim), "the rows").astype(np.int64)
        expect_shape(got, want.shape, "the rows")
        if np.array_equal(got, np.concatenate([np.full(n, i) for i, n in enumerate(section)])):
            raise NotYet("those are contiguous sections (Qwen2-VL's layout); Qwen3-VL interleaves the three rows")
        if not np.array_equal(got, want):
            raise NotYet(f"rows differ from transformers' recomposition_frequencies for sections {section}")


@exercise("13.3", "deepstack_merger", "one DeepStack merger: the norm after the 2x2 concatenation")
def check_13_3(fn):
    from transformers.models.qwen3_vl.configuration_qwen3_vl import Qwen3VLVisionConfig
    from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLVisionPatchMerger

    torch.manual_seed(0)
    config = Qwen3VLVisionConfig(hidden_size=16, out_hidden_size=12, spatial_merge_size=2)
    module = Qwen3VLVisionPatchMerger(config, use_postshuffle_norm=True).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))
    weights = {k: v.detach().numpy().copy() for k, v in module.state_dict().items()}
    x = rng(133).standard_normal((24, 16)).astype(np.float32)
    with torch.no_grad():
        want = module(torch.from_numpy(x)).numpy()
    got = as_array(call(fn, x.copy(), weights), "the DeepStack features")
    expect_shape(got, want.shape, "the DeepStack features")
    expect_close(got, want, "the DeepStack merger", rtol=1e-5,
                 hint="DeepStack normalises the concatenated 4D vector, after the merge, unlike the final merger")


# --------------------------------------------------------------------------------------------------
# 14 · the capstone: the whole forward, judged stage by stage against transformers' taps
# --------------------------------------------------------------------------------------------------
_CAPSTONE = {}


def _capstone_case(preset: str):
    """A small tower of the family (seeded random weights in the real layout), two images and a video, and
    transformers' taps of it at every stage, the ones inside the blocks included (cached per preset): whatever
    stages the learner taps, the checker compares them all."""
    if preset not in _CAPSTONE:
        import qvlearn
        from qvlearn.tools.cache import default_model
        from qvlearn.tools.reference import reference_tower, reference_trace

        path = default_model(preset, seed=0, log=lambda *a: None)
        config = qvlearn.read_config(path)
        r = rng(14)
        images = [r.integers(0, 256, (150, 230, 3), dtype=np.uint8), r.integers(0, 256, (224, 224, 3), dtype=np.uint8)]
        video = [r.integers(0, 256, (90, 130, 3), dtype=np.uint8) for _ in range(3)]
        pixel_values, grid = qvlearn.preprocess(images=images, videos=[video], family=config.family)
        reference = reference_trace(reference_tower(path), pixel_values, grid, stages="*")  # inner stages too
        _CAPSTONE[preset] = (config, qvlearn.load_weights(path, config), pixel_values, grid, reference)
    return _CAPSTONE[preset]


def _check_forward(fn, preset: str, required: tuple):
    from qvlearn.tools.taps import TapError, compare_taps

    config, weights, pixel_values, grid, reference = _capstone_case(preset)
    taps = {}

    def tap(name, array):
        taps[name] = np.asarray(array.detach().numpy() if isinstance(array, torch.Tensor) else array)

    out = as_array(call(fn, config, {k: v.copy() for k, v in weights.items()}, pixel_values.copy(), grid.copy(), tap),
                   "the embeddings")
    taps.setdefault("embeddings", out)
    missing = [n for n in required if n not in taps]
    if missing:
        raise NotYet(f"tap {', '.join(missing)} too: the checker can only say where your forward departs at the "
                     "stages you show it")
    try:
        rows = compare_taps(taps, reference)
    except TapError as err:
        raise NotYet(str(err)) from None
    bad = [r for r in rows if not r.ok]
    if bad:
        first = bad[0]
        agree = [r.name for r in rows[: rows.index(first)] if r.name not in ("pixel_values", "grid_thw")]
        raise NotYet(f"first stage beyond tolerance: {first.name} (relative error {first.rel:.1e}"
                     + (f"; {first.note}" if first.note else "") + ")"
                     + (f"; {', '.join(agree[-3:])} and every stage before agree" if agree else ""))
    expect_close(out, reference["embeddings"], "the returned embeddings")


@exercise("14.1", "encoder_forward", "the whole Qwen2.5-VL forward from your own functions")
def check_14_1(fn):
    _check_forward(fn, "tiny-qwen2.5-vl", ("patch_embeds", "blocks.0", "merger", "embeddings"))


@exercise("14.2", "encoder_forward_qwen3", "the Qwen3-VL variant: position table, LayerNorm blocks, DeepStack")
def check_14_2(fn):
    _check_forward(fn, "tiny-qwen3-vl", ("patch_embeds", "pos_embeds", "blocks.0", "deepstack.0", "embeddings"))
