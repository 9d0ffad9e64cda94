"""Golden taps: every stage of one forward in a safetensors file, and a comparison of two such files.

For someone porting the encoder: write the same named tensors from your port (any subset of the
stages), then ``python -m qvlearn compare golden.safetensors mine.safetensors`` names the first stage
where the port leaves the tolerance.

Tap file format, version 1 (a plain safetensors file; any language with a safetensors writer can make
one):

* metadata ``qvlearn_taps_format = "1"`` (required); optional ``source``, ``qvlearn_version``,
  ``backend``, ``config`` (the snapshot's config.json as JSON);
* tensors named as in :data:`TAP_STAGES` (``blocks.{i}`` for every block index i), float32 for
  activations, int32/int64 for indices. For Qwen2.5-VL, ``blocks.{i}``, ``last_hidden_state``,
  ``merger.ln_q`` and ``merger`` are in **window order** (as transformers keeps them), and
  ``blocks.{i}.natural`` holds block i's output in natural token order.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engine.window_index import inverse_permutation, patch_permutation
from ..errors import TapError
from ..stages import (  # noqa: F401
    INNER_STAGES,
    INTEGER_STAGES,
    TAP_STAGES,
    block_of,
    default_stages,
    is_stage_name,
    select_stages,
    stage_names,
    stage_order,
)

FORMAT_VERSION = "1"
FORMAT_KEY = "qvlearn_taps_format"
DEFAULT_RTOL = 1e-5  # 5x the float32 noise seen on 32-block towers (<= 2e-6)


def add_natural_order(stages: dict) -> dict:
    """For window-ordered (Qwen2.5-VL) traces, add ``blocks.{i}.natural``: block outputs in token order."""
    if "window_index" not in stages:
        return stages
    unit = stages["blocks.0"].shape[0] // len(stages["window_index"])
    rows = inverse_permutation(patch_permutation(np.asarray(stages["window_index"]), int(math.isqrt(unit))))
    for name in [n for n in stages if re.fullmatch(r"blocks\.\d+", n)]:
        stages[f"{name}.natural"] = np.asarray(stages[name])[rows]
    return stages


FLOORS_KEY = "noise_floors"
"""Metadata key of a tap file's float32 noise floors: JSON ``{stage: [rel, scale]}``, each stage's difference to a
second float32 implementation of the same forward (qvlearn against transformers), written by ``taps --floors``."""


def noise_floors(stages: dict, other: dict) -> dict:
    """``{stage: (rel, scale)}``: each float stage's float32 noise floor, measured against ``other`` (the same
    forward by another implementation)."""
    floors = {}
    for name, value in stages.items():
        if name in other and name not in INTEGER_STAGES and np.asarray(value).shape == np.asarray(other[name]).shape:
            row = compare_stage(name, np.asarray(value), np.asarray(other[name]), math.inf, math.inf)
            if row.rel == row.rel:
                floors[name] = (row.rel, row.scale)
    return floors


def stored_floors(metadata: dict, label: str = "the reference file") -> dict | None:
    """The noise floors a tap file's metadata holds (``taps --floors``), or None."""
    text = (metadata or {}).get(FLOORS_KEY)
    if not text:
        return None
    try:
        floors = {k: (float(r), float(s)) for k, (r, s) in json.loads(text).items()}
    except (ValueError, TypeError) as exc:
        raise TapError(f"{label}: its metadata {FLOORS_KEY!r} is not a JSON object of [rel, scale] pairs ({exc})") \
            from None
    return floors


def save_taps(path, stages: dict, *, source: str, config: dict | None = None, backend: str = "numpy",
              floors: dict | None = None) -> Path:
    """Write ``stages`` (NumPy arrays by stage name) as a version-1 tap file; ``floors`` (:func:`noise_floors`) go
    into its metadata."""
    from safetensors.numpy import save_file

    from .. import __version__
    from ..atomic import atomic_file

    path = Path(path)
    tensors = {name: np.ascontiguousarray(np.asarray(stages[name])) for name in sorted(stages, key=stage_order)}
    metadata = {FORMAT_KEY: FORMAT_VERSION, "source": source, "qvlearn_version": __version__, "backend": backend,
                "config": json.dumps(config or {})}
    if floors:
        metadata[FLOORS_KEY] = json.dumps({k: [float(r), float(s)] for k, (r, s) in floors.items()})
    with atomic_file(path) as tmp:  # whole or not at all
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def load_taps(path) -> tuple[dict, dict]:
    """``(stages, metadata)`` of a tap file; raises :class:`TapError` for another format."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise TapError(f"tap file not found: {path}")
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            version = metadata.get(FORMAT_KEY)
            if version != FORMAT_VERSION:
                raise TapError(f"{path} is not a qvlearn tap file of format {FORMAT_VERSION} (metadata "
                               f"{FORMAT_KEY}={version!r}); write it with `python -m qvlearn taps`, or add that "
                               "metadata key to a port's own file")
            stages = {k: f.get_tensor(k) for k in f.keys()}
    except SafetensorError as exc:
        raise TapError(f"{path} is not a readable safetensors file: {exc}") from None
    return stages, metadata


DEFAULT_SCALE_TOL = 1e-6
BASELINE_FACTOR = 10.0
SCALE_NOISE = 1e-7  # float32 noise gives scale errors below this on every stage of a 32-block tower
BASELINE_MIN_REL = 1e-6  # with a baseline, a stage's rel passes below this whatever its floor
INPUT_STAGES = ("pixel_values", "grid_thw")
EXIT_BEYOND, EXIT_INPUTS = 1, 3
"""compare's exit codes besides 0 (every stage within tolerance) and 2 (bad input): 1, a stage of the encoder is
beyond tolerance; 3, the two files' inputs (pixel_values, grid_thw) differ, so the files come from different
images or preprocessing and nothing after them says anything about a port's arithmetic."""

TAP_TABLE = (
    # (name, shape, dtype, families, what it holds)
    ("pixel_values", "[N, C*T*P*P]", "f32", "all", "the processor's rows (1176 = 3*2*14*14; 1536 for 16-px patches)"),
    ("grid_thw", "[k, 3]", "i64", "all", "(t, h, w) in patches per image / video"),
    ("patch_embeds", "[N, D]", "f32", "all", "the Conv3d as a matmul, natural order; with its bias (third generation)"),
    ("pos_embeds", "[N, D]", "f32", "third generation", "the learned table interpolated to the grid (merge-block "
                                                         "order, per frame pair), before it is added"),
    ("position_ids", "[N, 2]", "i64", "all", "columns (row, col) = (h, w) of each patch, merge-block order"),
    ("cos", "[N, head_dim]", "f32", "all", "natural order; channels [row f | col f | row f | col f]"),
    ("sin", "[N, head_dim]", "f32", "all", "the same layout"),
    ("cu_seqlens", "[frame pairs + 1]", "i32", "all", "patch rows (not merged tokens), starting at 0: one segment "
                                                      "per frame pair of each image and video"),
    ("window_index", "[N/4]", "i64", "Qwen2.5-VL, Qwen2.5-Omni", "merged tokens (one per 2x2 block) in window "
                                                                  "order: entry r is the natural index of row r"),
    ("cu_window_seqlens", "[windows + 1]", "i32", "Qwen2.5-VL, Qwen2.5-Omni", "patch rows, starting at 0, empty "
                                                                              "padding windows dropped"),
    ("blocks.{i}.norm1", "[N, D]", "f32", "all", "norm1's output"),
    ("blocks.{i}.attn.q", "[N, heads, head_dim]", "f32", "all", "q after RoPE and **before** the 1/sqrt(head_dim) "
                                                                "scale (token-major, then heads, then channels)"),
    ("blocks.{i}.attn.k", "[N, heads, head_dim]", "f32", "all", "k after RoPE (v is not tapped: see attn)"),
    ("blocks.{i}.attn", "[N, D]", "f32", "all", "attention after `proj`, before the residual"),
    ("blocks.{i}.residual1", "[N, D]", "f32", "all", "`x + attn`"),
    ("blocks.{i}.norm2", "[N, D]", "f32", "all", "norm2's output"),
    ("blocks.{i}.mlp.fc1", "[N, I]", "f32", "Qwen2-VL, third generation", "fc1 (linear_fc1) before the activation"),
    ("blocks.{i}.mlp.gate", "[N, I]", "f32", "Qwen2.5-VL, Qwen2.5-Omni", "gate_proj's output, before SiLU"),
    ("blocks.{i}.mlp.up", "[N, I]", "f32", "Qwen2.5-VL, Qwen2.5-Omni", "up_proj's output"),
    ("blocks.{i}.mlp.act", "[N, I]", "f32", "all", "the input of the MLP's last linear: QuickGELU(fc1) (Qwen2-VL), "
                                                   "gelu_tanh(fc1) (third generation), `silu(gate) * up` "
                                                   "(Qwen2.5-VL, Qwen2.5-Omni)"),
    ("blocks.{i}.mlp", "[N, D]", "f32", "all", "the MLP's output, before the second residual"),
    ("blocks.{i}", "[N, D]", "f32", "all", "block i's output; **window order** for the windowed families"),
    ("blocks.{i}.natural", "[N, D]", "f32", "Qwen2.5-VL, Qwen2.5-Omni", "block i's output in natural order"),
    ("deepstack.{j}", "[N/4, out]", "f32", "Qwen3-VL, Qwen3-Omni", "DeepStack merger j's output (block "
                                                                   "deepstack_visual_indexes[j], norm after the 2x2)"),
    ("last_hidden_state", "[N, D]", "f32", "all", "the last block's output (window order where windowed)"),
    ("merger.ln_q", "[N, D]", "f32", "Qwen2-VL, Qwen2.5-VL, the Omni models", "the merger's norm, before the 2x2"),
    ("merger.norm", "[N, D]", "f32", "Qwen3-VL, Qwen3.5, Qwen4-Exp", "the same norm under its third-generation name"),
    ("merger", "[N/4, out]", "f32", "all", "the merger's output (window order where windowed)"),
    ("embeddings", "[N/4, out]", "f32", "all", "the output, natural order: what the LLM receives"),
)
"""Every stage a tap file may hold: name, shape, dtype, the families that report it, what it is. A file holds any
subset; ``embeddings`` must be in it unless ``--stage`` names what to compare. Write float stages as float32 even
from a bf16 or fp16 port (cast before writing): compare then tells the rounding of the port from its arithmetic."""

_NOT_TAPPED = {
    "attn.v": "v is not a tap stage (RoPE does not touch it); compare blocks.{i}.attn, the attention's output",
    "attn.qkv": "the fused projection is not a tap stage; compare blocks.{i}.attn.q and .attn.k (after RoPE)",
    "attn.proj": "the projection's output is blocks.{i}.attn",
    "attn.out": "the attention's output after proj is blocks.{i}.attn",
    "mlp.fc2": "the MLP's output is blocks.{i}.mlp", "mlp.down": "the MLP's output is blocks.{i}.mlp",
    "mlp.down_proj": "the MLP's output is blocks.{i}.mlp", "mlp.linear_fc2": "the MLP's output is blocks.{i}.mlp",
    "mlp.gate_proj": "blocks.{i}.mlp.gate", "mlp.up_proj": "blocks.{i}.mlp.up", "mlp.linear_fc1": "blocks.{i}.mlp.fc1",
    "norm": "blocks.{i}.norm1 or blocks.{i}.norm2", "residual": "blocks.{i}.residual1", "output": "blocks.{i}",
}


@dataclass
class StageDiff:
    name: str
    shape: tuple
    max_abs: float
    rel: float
    cosine: float
    ok: bool
    note: str = ""
    scale: float = math.nan   # |<a, b> / <b, b> - 1|: a systematic scale error (an eps, a constant)
    floor: float = math.nan   # the baseline's rel for this stage (fp32 noise floor), when given
    scale_floor: float = math.nan  # the baseline's scale error for this stage, when given


def _rows(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], -1) if x.ndim > 1 else x.reshape(-1, 1)


def _diagnose_order(name: str, a: np.ndarray, b: np.ndarray, window_index, rtol: float) -> str:
    """For a failing float stage: do a's rows match b's after a permutation a port commonly gets wrong?"""
    if a.ndim == 0 or a.shape != b.shape or a.shape[0] < 2:
        return ""
    ra, rb = _rows(a.astype(np.float64)), _rows(b.astype(np.float64))
    scale = float(np.max(np.abs(rb))) or 1.0

    def close(x):
        return float(np.max(np.abs(x - rb))) / scale <= rtol

    n = ra.shape[0]
    if window_index is not None:
        w_index = np.asarray(window_index)
        unit = n // len(w_index) if len(w_index) and n % len(w_index) == 0 else 0
        if unit in (1, 4):
            to_window = patch_permutation(w_index, int(math.isqrt(unit)))  # natural rows -> window order
            if close(ra[to_window]):
                return "rows match after the window permutation: saved in natural order where window order is expected"
            if close(ra[inverse_permutation(to_window)]):
                return ("rows match after undoing the window permutation: saved in window order where natural order "
                        "is expected")
    if n % 4 == 0:
        swap = np.arange(n).reshape(-1, 4)[:, [0, 2, 1, 3]].reshape(-1)
        if close(ra[swap]):
            return ("rows match after swapping patches (0,1) and (1,0) of every 2x2 merge block: column-major "
                    "instead of row-major order inside the blocks")
    # rows as a set: sort both sides by two row statistics (cheap; ties between distinct rows are unlikely)
    order_a, order_b = np.lexsort((ra.max(axis=1), ra.sum(axis=1))), np.lexsort((rb.max(axis=1), rb.sum(axis=1)))
    matched = np.empty_like(order_b)
    matched[order_b] = order_a
    if close(ra[matched]):
        return "the rows are the reference's rows in another order (a token-order bug, not arithmetic)"
    if ra.shape[1] > 1 and float(np.max(np.abs(np.sort(ra, axis=1) - np.sort(rb, axis=1)))) / scale <= rtol:
        return "each row holds the reference's values in another order (a channel or head layout bug)"
    return ""


def compare_stage(name: str, a: np.ndarray, b: np.ndarray, rtol: float, scale_tol: float = DEFAULT_SCALE_TOL,
                  window_index=None) -> StageDiff:
    if a.shape != b.shape:
        return StageDiff(name, a.shape, math.nan, math.nan, math.nan, False, f"shape {a.shape} vs {b.shape}")
    if name in INTEGER_STAGES or (a.dtype.kind in "iu" and b.dtype.kind in "iu"):
        diff = int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))) if a.size else 0
        return StageDiff(name, a.shape, float(diff), float(diff), 1.0 if diff == 0 else math.nan, diff == 0,
                         "integer, must be identical")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    max_abs = float(np.max(np.abs(a64 - b64))) if a.size else 0.0
    ref_scale = float(np.max(np.abs(b64))) if a.size else 0.0
    rel = max_abs / ref_scale if ref_scale > 0 else max_abs
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    cosine = float(np.sum(a64 * b64) / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
    scale = abs(float(np.sum(a64 * b64) / nb ** 2) - 1.0) if nb > 0 else 0.0
    finite = bool(np.all(np.isfinite(a64)) and np.all(np.isfinite(b64)))
    ok = finite and rel <= rtol and scale <= scale_tol
    note = "" if finite else "NaN/Inf"
    if finite and rel <= rtol and scale > scale_tol:
        note = f"a systematic scale error of {scale:.1e} (an eps or a constant?), beyond {scale_tol:.0e}"
    if finite and rel > rtol:
        note = _diagnose_value(name, a, b, a64, b64) or _diagnose_order(name, a, b, window_index, rtol)
    return StageDiff(name, a.shape, max_abs, rel, cosine, ok, note, scale)


def suggest(name: str) -> str:
    """What a misspelled stage name most likely means, in the same block: ``blocks.2.atn`` -> ``blocks.2.attn``;
    names of things that are not tapped say what to compare instead (``blocks.0.attn.v``)."""
    import difflib

    match = re.fullmatch(r"blocks?[._-]?(\d+)[._-]?(.*)", name)
    if match:
        i, inner = match.group(1), match.group(2)
        if inner in _NOT_TAPPED:
            return _NOT_TAPPED[inner].replace("{i}", i)
        if not inner:
            return f"blocks.{i}"
        close = difflib.get_close_matches(inner, list(INNER_STAGES) + ["natural"], n=1, cutoff=0.5)
        return f"blocks.{i}.{close[0]}" if close else ""
    match = re.fullmatch(r"deep[_-]?stack[._-]?(\d+)", name)
    if match:
        return f"deepstack.{match.group(1)}"
    known = [n for n in TAP_STAGES if "{" not in n]
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return close[0] if close else ""


def check_names(taps: dict, label: str) -> None:
    """Raise for names that are not stages of the format (a misspelled name would silently compare nothing)."""
    bad = [n for n in taps if not is_stage_name(n)]
    if bad:
        hints = []
        for name in bad:
            hint = suggest(name)
            hints.append(f"{name!r}" + (f" ({hint})" if " " in hint else f" (did you mean {hint!r}?)" if hint else ""))
        raise TapError(f"the {label} tap file has names that are not tap stages: {', '.join(hints)}. Stage names "
                       "are pixel_values, grid_thw, patch_embeds, pos_embeds, position_ids, cos, sin, cu_seqlens, "
                       "window_index, cu_window_seqlens, blocks.{i}, blocks.{i}.natural, blocks.{i}.norm1 ... "
                       "blocks.{i}.mlp, deepstack.{j}, last_hidden_state, merger.ln_q / merger.norm, merger, "
                       "embeddings (docs/porting.md: the tap stages). To compare some stages of such a file, name "
                       "them with --stage")


HALF_FORMATS = {
    # name: (unit roundoff u, the compare flags --rtol and --scale-tol that pass on a clean file of the format)
    "bfloat16": (2.0 ** -8, ("1e-2", "1e-2")),
    "float16": (2.0 ** -11, ("1e-3", "1e-3")),
}
"""The half-precision formats compare recognises, coarsest first. Rounding a reference ``b`` to such a format
changes each value by at most ``u |b_i|`` (round to nearest), so ``max|a - b| / max|b| <= u`` and
``|<a - b, b>| / <b, b> <= u``: the flags (both above ``u``) pass on a clean file of that format, whatever its
values (float16: as long as nothing overflows 65504 and the stage's largest value is above float16's subnormals)."""


def half_format(a: np.ndarray) -> str:
    """``"bfloat16"`` / ``"float16"`` for an array stored in that type, or a float32 array every value of which is
    one of that type's numbers; ``""`` otherwise. bfloat16 is tried first: a bfloat16 value inside float16's range
    is often a float16 value too, while a file rounded to float16 is (almost never) all bfloat16 values, so the
    coarsest format that explains the file is its format."""
    import ml_dtypes

    if a.dtype == np.float16:
        return "float16"
    if a.dtype == ml_dtypes.bfloat16:
        return "bfloat16"
    if a.dtype != np.float32 or a.size < 64:
        return ""
    for name, dtype in (("bfloat16", ml_dtypes.bfloat16), ("float16", np.float16)):
        with np.errstate(over="ignore"):
            if np.array_equal(a.astype(dtype).astype(np.float32), a, equal_nan=True):
                return name
    return ""


def half_advice(name: str) -> str:
    """The compare flags that pass on a clean file of the half-precision format ``name``."""
    rtol, scale_tol = HALF_FORMATS[name][1]
    return f"--rtol {rtol} --scale-tol {scale_tol}"


def _diagnose_value(name: str, a: np.ndarray, b: np.ndarray, a64, b64) -> str:
    """For a failing float stage: a constant factor, or values of a half-precision type."""
    nb = float(np.sum(b64 * b64))
    if nb > 0:
        c = float(np.sum(a64 * b64)) / nb
        residual = float(np.linalg.norm(a64 - c * b64)) / (float(np.linalg.norm(a64)) or 1.0)
        if residual < 1e-5 and abs(c - 1) > 1e-4:
            note = f"the first file is {c:.6g} x the reference at this stage (cosine 1): a constant factor"
            if name.endswith(("attn.q", "attn.k")) and a.ndim == 3 and abs(c * math.sqrt(a.shape[-1]) - 1) < 1e-3:
                note += (f" = 1/sqrt(head_dim {a.shape[-1]}): tapped after the attention scale; the tap is q after "
                         "RoPE, before the scale")
            return note
    half = half_format(a)
    if half:
        u = HALF_FORMATS[half][0]
        stored = "holds only values of" if a.dtype == np.float32 else "holds"
        return (f"the first file {stored} {half}: its rounding alone is up to {u:.1e} relative, beyond a float32 "
                f"tolerance; write float32 from a float32 run to check the arithmetic, or judge this run as "
                f"{half} with `compare A B {half_advice(half)}`")
    return ""


def compare_taps(a: dict, b: dict, rtol: float = DEFAULT_RTOL, stages: list | None = None,
                 scale_tol: float = DEFAULT_SCALE_TOL, baseline: dict | None = None,
                 factor: float = BASELINE_FACTOR, floors: dict | None = None) -> list[StageDiff]:
    """Compare two tap dicts stage by stage (``b`` is the reference for the relative error).

    A float stage passes when ``max|a-b|/max|b| <= rtol`` and its best-fit scale ``<a,b>/<b,b>`` is within
    ``scale_tol`` of 1 (float32 noise has no systematic scale; an eps or a constant does). With ``baseline``
    (a third file, e.g. transformers' taps when ``b`` is qvlearn's), each stage's ``rel(b, baseline)`` and scale
    error are its float32 noise floors, and a stage more than ``factor`` times above either (and above 1e-6 in rel,
    :data:`SCALE_NOISE` in scale) fails too. Without ``baseline``, ``floors`` (``{stage: (rel, scale)}``, what
    ``taps --floors`` stores in a reference file's metadata: :func:`noise_floors`) serve the same way.
    Without ``stages``, every stage both files hold is compared; they must share a stage of the encoder
    (not only the inputs), and ``embeddings``, the output, must be in both. ``stages``: glob patterns
    (``"blocks.3.*"``, ``"embeddings"``); each must match a stage both files hold, and the other names in the files
    are then not checked. A stage of the other family (``mlp.fc1`` in a Qwen2.5-VL comparison) fails.
    """
    import fnmatch

    if stages:
        names = []
        for pattern in stages:
            hits = sorted({n for n in [*a, *b] if fnmatch.fnmatchcase(n, pattern)}, key=stage_order)
            if not hits:
                hint = suggest(pattern)
                hint = (f" ({hint})" if " " in hint else f" Did you mean {hint!r}?" if hint and hint != pattern
                        else "")
                raise TapError(f"--stage {pattern!r} matches no stage of either tap file.{hint} (The first has: "
                               f"{', '.join(sorted(a, key=stage_order)[:12])}, ...)")
            for name in hits:
                for label, taps in (("first", a), ("second", b)):
                    if name not in taps:
                        raise TapError(f"stage {name!r} (from --stage {pattern!r}) is missing from the {label} tap "
                                       f"file; it holds {', '.join(sorted(taps, key=stage_order)[:12])}, ...")
            names += [n for n in hits if n not in names]
    else:
        check_names(a, "first")
        check_names(b, "second")
        names = [n for n in a if n in b]
        if not [n for n in names if n not in INPUT_STAGES]:
            raise TapError(f"the two tap files share no stage of the encoder, so nothing would be compared (first: "
                           f"{', '.join(sorted(a, key=stage_order)[:8]) or 'nothing'}; second: "
                           f"{', '.join(sorted(b, key=stage_order)[:8]) or 'nothing'}). Check the stage names, or "
                           "pass --stage NAME for what you mean to compare")
        for label, taps in (("first", a), ("second", b)):
            if "embeddings" not in taps:
                raise TapError(f"the {label} tap file has no 'embeddings' (the encoder's output); write it (`taps` "
                               "always does), or pass --stage NAME (globs allowed) for the stages you mean to compare")
    window_index = b.get("window_index", a.get("window_index"))
    rows = [compare_stage(n, np.asarray(a[n]), np.asarray(b[n]), rtol, scale_tol, window_index)
            for n in sorted(names, key=stage_order)]
    for row in rows:
        if row.name in INPUT_STAGES and not row.ok and "float16" not in row.note:  # half precision: same image
            kind = ("another image size, or another smart_resize" if row.name == "grid_thw" else
                    f"cosine {row.cosine:.3f}: another image?" if row.cosine == row.cosine and row.cosine < 0.99
                    else "a preprocessing difference: resize, rounding, normalisation, or another image")
            row.note = ((row.note + "; ") if row.note else "") + (
                f"the two files' inputs differ ({kind}): every later stage differs for that reason alone; "
                "make the inputs agree first (feed the port the same pixel_values)")
    _name_cross_matches(rows, a, b, rtol)
    if not stages:
        rows += _other_family_rows(a, b)
    if baseline is not None:
        check_names({k: v for k, v in baseline.items() if k in names}, "baseline")
    measured = {}
    for row in rows:
        if row.rel != row.rel:
            continue
        if baseline is not None and row.name in baseline and np.asarray(baseline[row.name]).shape == row.shape:
            floor = compare_stage(row.name, np.asarray(b[row.name]), np.asarray(baseline[row.name]), math.inf, math.inf)
            measured[row.name] = (floor.rel, floor.scale)
        elif baseline is None and floors and row.name in floors:  # the reference file's own floors (taps --floors)
            measured[row.name] = tuple(floors[row.name])
    for row in rows:
        if row.name not in measured:
            continue
        rel_floor, scale_floor = measured[row.name]
        row.floor, row.scale_floor = rel_floor, scale_floor
        if row.ok and row.rel > max(factor * rel_floor, BASELINE_MIN_REL):
            row.ok = False
            row.note = f"{row.rel / max(rel_floor, 1e-12):.0f}x the float32 noise floor of this stage"
        elif row.ok and row.scale == row.scale and row.scale > max(factor * scale_floor, SCALE_NOISE):
            row.ok = False
            whose = "baseline's" if baseline is not None else "reference file's floor"
            row.note = (f"a systematic scale error {row.scale / max(scale_floor, 1e-15):.0f}x the {whose} "
                        f"at this stage ({row.scale:.1e} against {scale_floor:.1e}): an eps or a constant?")
    return rows


def _name_cross_matches(rows: list, a: dict, b: dict, rtol: float) -> None:
    """A failing stage inside a block whose values are the reference's values of another stage of that block (swapped
    gate and up, q and k): say so, and that the two are swapped when each matches the other."""
    failing = {r.name: r for r in rows if not r.ok and block_of(r.name) and block_of(r.name)[1]}
    for name, row in failing.items():
        i, inner = block_of(name)
        mine = np.asarray(a[name], dtype=np.float64)
        for other in (n for n in b if n != name and (block_of(n) or (None, None))[0] == i and block_of(n)[1]):
            theirs = np.asarray(b[other], dtype=np.float64)
            scale = float(np.max(np.abs(theirs))) if theirs.size else 0.0
            if theirs.shape != mine.shape or not scale or float(np.max(np.abs(mine - theirs))) / scale > rtol:
                continue
            other_inner = block_of(other)[1]
            back = other in a and np.asarray(a[other]).shape == np.asarray(b[name]).shape and float(
                np.max(np.abs(np.asarray(a[other], np.float64) - np.asarray(b[name], np.float64)))) <= rtol * max(
                float(np.max(np.abs(np.asarray(b[name], np.float64)))), 1e-30)
            note = (f"{inner} and {other_inner} swapped: this file's {inner} is the reference's {other_inner} and the "
                    f"other way round" if back else f"this file's {inner} equals the reference's {other_inner}")
            row.note = note + (f"; {row.note}" if row.note else "")
            break


# Stages that belong to one MLP or merger layout: a file holding one while the reference holds the other is a port
# built for the other family.
_LAYOUTS = (({"mlp.fc1"}, {"mlp.gate", "mlp.up"}, "the fc1/fc2 MLP (Qwen2-VL, the third generation)",
             "the gated MLP (Qwen2.5-VL, Qwen2.5-Omni)"),
            ({"merger.ln_q"}, {"merger.norm"}, "the merger's ln_q (Qwen2-VL, Qwen2.5-VL, the Omni models)",
             "the merger's norm (Qwen3-VL, Qwen3.5, Qwen4-Exp)"))


def _inner(names) -> set:
    return {(block_of(n) or (None, n))[1] or n for n in names}


def _other_family_rows(a: dict, b: dict) -> list[StageDiff]:
    rows = []
    ours, theirs = _inner(a), _inner(b)
    for first, second, first_title, second_title in _LAYOUTS:
        for mine, ref, my_title, ref_title in ((first, second, first_title, second_title),
                                                (second, first, second_title, first_title)):
            if ours & mine and not theirs & mine and theirs & ref:
                for name in sorted((n for n in a if _inner([n]) & mine and n not in b), key=stage_order):
                    shape = tuple(np.asarray(a[name]).shape)
                    rows.append(StageDiff(name, shape, math.nan, math.nan, math.nan, False,
                                          f"a stage of {my_title}; the reference has {ref_title}: is the port built "
                                          "for another family?"))
    return rows


def only_in_one(a: dict, b: dict) -> tuple[list, list]:
    """Stages only the first / only the second file holds."""
    return (sorted((n for n in a if n not in b), key=stage_order),
            sorted((n for n in b if n not in a), key=stage_order))


def format_table(rows: list[StageDiff], rtol: float, scale_tol: float = DEFAULT_SCALE_TOL,
                 factor: float = BASELINE_FACTOR) -> str:
    with_floor = any(r.floor == r.floor for r in rows)
    head = f"{'stage':24s} {'shape':16s} {'max |diff|':>11s} {'rel error':>10s} {'scale err':>10s} {'cosine':>9s}"
    lines = [head + (f" {'rel floor':>10s} {'scale floor':>11s}" if with_floor else "") + "  status"]
    for r in rows:
        status = "ok" if r.ok else "BEYOND TOLERANCE"
        if r.note:
            status += f" ({r.note})"
        line = f"{r.name:24s} {str(tuple(r.shape)):16s} {r.max_abs:11.3e} {r.rel:10.3e} {r.scale:10.1e} {r.cosine:9.6f}"
        if with_floor:
            line += f" {r.floor:10.1e} {r.scale_floor:11.1e}"
        lines.append(line + "  " + status)
    bad = [r for r in rows if not r.ok]
    limits = f"rel <= {rtol:g} and scale error <= {scale_tol:g}"
    if with_floor:
        limits += (f", and at most {factor:g}x the stage's float32 noise floor or {BASELINE_MIN_REL:g} in rel "
                   f"and {SCALE_NOISE:g} in scale, whichever is larger")
    if bad and _inputs_differ(bad[0]):
        lines.append(f"the inputs differ at {bad[0].name}: the files come from different images or preprocessing, so "
                     f"nothing after it judges a port (exit {EXIT_INPUTS})")
    elif bad:
        lines.append(f"first stage beyond tolerance: {bad[0].name} (limits: {limits})")
        where = block_of(bad[0].name)
        if where and where[1] in (None, "natural") and not any(
                (block_of(r.name) or (None, None))[0] == where[0] and (block_of(r.name) or (0, None))[1] not in
                (None, "natural") for r in rows):
            lines.append(f"to see where inside block {where[0]} it departs, tap its inner stages in both runs: "
                         f"taps ... --stages 'blocks.{where[0]}.*' (norm1, attn.q, attn.k, ... mlp), then compare "
                         "again")
    else:
        lines.append(f"all {len(rows)} stages within tolerance ({limits}; integers identical)")
    return "\n".join(lines)


def exit_code(rows: list[StageDiff]) -> int:
    """compare's exit code for these rows: 0, :data:`EXIT_BEYOND` or :data:`EXIT_INPUTS`."""
    bad = [r for r in rows if not r.ok]
    if not bad:
        return 0
    return EXIT_INPUTS if _inputs_differ(bad[0]) else EXIT_BEYOND


def _inputs_differ(row: StageDiff) -> bool:
    return row.name in INPUT_STAGES and "inputs differ" in row.note
