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

from .errors import QvlearnError
from .window_index import inverse_permutation, patch_permutation

FORMAT_VERSION = "1"
FORMAT_KEY = "qvlearn_taps_format"
TAP_STAGES = ("pixel_values", "grid_thw", "patch_embeds", "position_ids", "cos", "sin", "cu_seqlens",
              "window_index", "cu_window_seqlens", "blocks.{i}", "blocks.{i}.natural", "last_hidden_state",
              "merger.ln_q", "merger", "embeddings")
INTEGER_STAGES = ("grid_thw", "position_ids", "cu_seqlens", "window_index", "cu_window_seqlens")
DEFAULT_RTOL = 1e-4


class TapError(QvlearnError):
    """A tap file cannot be read or compared: another format version, a missing stage, a shape mismatch."""


def stage_order(name: str) -> tuple:
    """Sort key following the forward: pixel_values ... blocks.0 ... blocks.31 ... embeddings."""
    match = re.fullmatch(r"blocks\.(\d+)(\.natural)?", name)
    if match:
        return (TAP_STAGES.index("blocks.{i}"), int(match.group(1)), bool(match.group(2)))
    if name in TAP_STAGES:
        return (TAP_STAGES.index(name), 0, False)
    return (len(TAP_STAGES), 0, name)


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

    from . import __version__

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {name: np.ascontiguousarray(np.asarray(stages[name])) for name in sorted(stages, key=stage_order)}
    metadata = {FORMAT_KEY: FORMAT_VERSION, "source": source, "qvlearn_version": __version__, "backend": backend,
                "config": json.dumps(config or {})}
    save_file(tensors, str(path), metadata=metadata)
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


@dataclass
class StageDiff:
    name: str
    shape: tuple
    max_abs: float
    rel: float
    cosine: float
    ok: bool
    note: str = ""


def compare_stage(name: str, a: np.ndarray, b: np.ndarray, rtol: float) -> StageDiff:
    if a.shape != b.shape:
        return StageDiff(name, a.shape, math.nan, math.nan, math.nan, False, f"shape {a.shape} vs {b.shape}")
    if name in INTEGER_STAGES or (a.dtype.kind in "iu" and b.dtype.kind in "iu"):
        diff = int(np.max(np.abs(a.astype(np.int64) - b.astype(np.int64)))) if a.size else 0
        return StageDiff(name, a.shape, float(diff), float(diff), 1.0 if diff == 0 else math.nan, diff == 0,
                         "integer, must be identical")
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    max_abs = float(np.max(np.abs(a64 - b64))) if a.size else 0.0
    scale = float(np.max(np.abs(b64))) if a.size else 0.0
    rel = max_abs / scale if scale > 0 else max_abs
    na, nb = np.linalg.norm(a64), np.linalg.norm(b64)
    cosine = float(np.sum(a64 * b64) / (na * nb)) if na > 0 and nb > 0 else float(na == nb)
    finite = bool(np.all(np.isfinite(a64)) and np.all(np.isfinite(b64)))
    return StageDiff(name, a.shape, max_abs, rel, cosine, finite and rel <= rtol, "" if finite else "NaN/Inf")


def compare_taps(a: dict, b: dict, rtol: float = DEFAULT_RTOL, stages: list | None = None) -> list[StageDiff]:
    """Compare two tap dicts stage by stage (``b`` is the reference for the relative error)."""
    if stages:
        for name in stages:
            for label, taps in (("first", a), ("second", b)):
                if name not in taps:
                    raise TapError(f"stage {name!r} is missing from the {label} tap file (it has: "
                                   f"{', '.join(sorted(taps, key=stage_order))})")
        names = list(stages)
    else:
        names = [n for n in a if n in b]
        if not names:
            raise TapError(f"the two tap files share no stage (first: {sorted(a)[:6]}..., second: {sorted(b)[:6]}...)")
    return [compare_stage(n, np.asarray(a[n]), np.asarray(b[n]), rtol) for n in sorted(names, key=stage_order)]


def format_table(rows: list[StageDiff], rtol: float) -> str:
    lines = [f"{'stage':24s} {'shape':16s} {'max |diff|':>11s} {'rel error':>10s} {'cosine':>9s}  status"]
    for r in rows:
        status = "ok" if r.ok else "BEYOND TOLERANCE"
        if r.note:
            status += f" ({r.note})"
        lines.append(f"{r.name:24s} {str(tuple(r.shape)):16s} {r.max_abs:11.3e} {r.rel:10.3e} {r.cosine:9.6f}  {status}")
    bad = [r for r in rows if not r.ok]
    if bad:
        lines.append(f"first stage beyond tolerance (rel <= {rtol:g}): {bad[0].name}")
    else:
        lines.append(f"all {len(rows)} stages within tolerance (rel <= {rtol:g}, integers identical)")
    return "\n".join(lines)
