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

from ..errors import TapError
from ..stages import (  # noqa: F401
    INNER_STAGES,
    INTEGER_STAGES,
    TAP_STAGES,
    default_stages,
    is_stage_name,
    select_stages,
    stage_names,
    stage_order,
)
from ..window_index import inverse_permutation, patch_permutation

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


def save_taps(path, stages: dict, *, source: str, config: dict | None = None, backend: str = "numpy") -> Path:
    """Write ``stages`` (NumPy arrays by stage name) as a version-1 tap file."""
    from safetensors.numpy import save_file

    from .. import __version__
    from ..atomic import atomic_file

    path = Path(path)
    tensors = {name: np.ascontiguousarray(np.asarray(stages[name])) for name in sorted(stages, key=stage_order)}
    metadata = {FORMAT_KEY: FORMAT_VERSION, "source": source, "qvlearn_version": __version__, "backend": backend,
                "config": json.dumps(config or {})}
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
INPUT_STAGES = ("pixel_values", "grid_thw")


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
                return "rows match after undoing the window permutation: saved in window order where natural order is expected"
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
        note = _diagnose_order(name, a, b, window_index, rtol)
    return StageDiff(name, a.shape, max_abs, rel, cosine, ok, note, scale)


def check_names(taps: dict, label: str) -> None:
    """Raise for names that are not stages of the format (a misspelled name would silently compare nothing)."""
    import difflib

    bad = [n for n in taps if not is_stage_name(n)]
    if bad:
        known = [n.replace("{i}", "0") for n in TAP_STAGES] + [f"blocks.0.{n}" for n in INNER_STAGES]
        hints = []
        for name in bad:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise TapError(f"the {label} tap file has names that are not tap stages: {', '.join(hints)}. Stage names "
                       "are pixel_values, grid_thw, patch_embeds, position_ids, cos, sin, cu_seqlens, window_index, "
                       "cu_window_seqlens, blocks.{i}, blocks.{i}.natural, blocks.{i}.norm1 ... blocks.{i}.mlp, "
                       "last_hidden_state, merger.ln_q, merger, embeddings (README: Golden taps)")


def compare_taps(a: dict, b: dict, rtol: float = DEFAULT_RTOL, stages: list | None = None,
                 scale_tol: float = DEFAULT_SCALE_TOL, baseline: dict | None = None,
                 factor: float = BASELINE_FACTOR) -> list[StageDiff]:
    """Compare two tap dicts stage by stage (``b`` is the reference for the relative error).

    A float stage passes when ``max|a-b|/max|b| <= rtol`` and its best-fit scale ``<a,b>/<b,b>`` is within
    ``scale_tol`` of 1 (float32 noise has no systematic scale; an eps or a constant does). With ``baseline``
    (a third file, e.g. transformers' taps when ``b`` is qvlearn's), each stage's ``rel(b, baseline)`` is its
    float32 noise floor, and a stage more than ``factor`` times above it (and above 1e-6) fails too.
    Without ``stages``, every stage both files hold is compared; they must share a stage of the encoder
    (not only the inputs), and ``embeddings``, the output, must be in both.
    """
    check_names(a, "first")
    check_names(b, "second")
    if stages:
        for name in stages:
            for label, taps in (("first", a), ("second", b)):
                if name not in taps:
                    import difflib

                    close = difflib.get_close_matches(name, list(taps), n=1)
                    hint = f" Did you mean {close[0]!r}?" if close else ""
                    raise TapError(f"stage {name!r} is missing from the {label} tap file.{hint} (It has: "
                                   f"{', '.join(sorted(taps, key=stage_order))}; --stage takes exact names)")
        names = list(stages)
    else:
        names = [n for n in a if n in b]
        if not [n for n in names if n not in INPUT_STAGES]:
            raise TapError(f"the two tap files share no stage of the encoder, so nothing would be compared (first: "
                           f"{', '.join(sorted(a, key=stage_order)[:8]) or 'nothing'}; second: "
                           f"{', '.join(sorted(b, key=stage_order)[:8]) or 'nothing'}). Check the stage names, or "
                           "pass --stage NAME for what you mean to compare")
        for label, taps in (("first", a), ("second", b)):
            if "embeddings" not in taps:
                raise TapError(f"the {label} tap file has no 'embeddings' (the encoder's output); write it, or pass "
                               "--stage NAME for each stage you mean to compare")
    window_index = b.get("window_index", a.get("window_index"))
    rows = [compare_stage(n, np.asarray(a[n]), np.asarray(b[n]), rtol, scale_tol, window_index)
            for n in sorted(names, key=stage_order)]
    if baseline is not None:
        check_names(baseline, "baseline")
        for row in rows:
            if row.name in baseline and np.asarray(baseline[row.name]).shape == row.shape and row.rel == row.rel:
                floor = compare_stage(row.name, np.asarray(b[row.name]), np.asarray(baseline[row.name]), math.inf,
                                      math.inf).rel
                row.floor = floor
                if row.ok and row.rel > max(factor * floor, 1e-6):
                    row.ok = False
                    row.note = f"{row.rel / max(floor, 1e-12):.0f}x the float32 noise floor of this stage"
    return rows


def only_in_one(a: dict, b: dict) -> tuple[list, list]:
    """Stages only the first / only the second file holds."""
    return (sorted((n for n in a if n not in b), key=stage_order), sorted((n for n in b if n not in a), key=stage_order))


def format_table(rows: list[StageDiff], rtol: float, scale_tol: float = DEFAULT_SCALE_TOL) -> str:
    with_floor = any(r.floor == r.floor for r in rows)
    head = f"{'stage':24s} {'shape':16s} {'max |diff|':>11s} {'rel error':>10s} {'scale err':>10s} {'cosine':>9s}"
    lines = [head + (f" {'fp32 floor':>10s}" if with_floor else "") + "  status"]
    for r in rows:
        status = "ok" if r.ok else "BEYOND TOLERANCE"
        if r.note:
            status += f" ({r.note})"
        line = f"{r.name:24s} {str(tuple(r.shape)):16s} {r.max_abs:11.3e} {r.rel:10.3e} {r.scale:10.1e} {r.cosine:9.6f}"
        if with_floor:
            line += f" {r.floor:10.1e}"
        lines.append(line + "  " + status)
    bad = [r for r in rows if not r.ok]
    limits = f"rel <= {rtol:g}, scale error <= {scale_tol:g}" + (", within the noise floor" if with_floor else "")
    if bad:
        lines.append(f"first stage beyond tolerance ({limits}): {bad[0].name}")
    else:
        lines.append(f"all {len(rows)} stages within tolerance ({limits}, integers identical)")
    return "\n".join(lines)
