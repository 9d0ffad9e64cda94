"""Command line.

    python -m qvlearn encode IMAGE... [--model DIR] --out FILE        vision embeddings
    python -m qvlearn taps IMAGE... [--model DIR] --out FILE [--reference]   every stage of one forward
    python -m qvlearn compare A.safetensors B.safetensors [--rtol R]  per-stage differences; exit 1 if beyond

Without ``--model`` the encoder uses an embedded default: seeded random weights in the shape of the
Qwen2.5-VL-7B vision tower, written once to the cache directory (``$QVLEARN_CACHE``, else
``$XDG_CACHE_HOME/qvlearn``, else ``~/.cache/qvlearn``) and reused.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

DEFAULT_PRESET = "qwen2.5-vl-7b"
DEFAULT_SEED = 0


def cache_dir() -> Path:
    if os.environ.get("QVLEARN_CACHE"):
        return Path(os.environ["QVLEARN_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qvlearn"


def default_model(preset: str | None = None, seed: int = DEFAULT_SEED, log=print, **vision_overrides) -> Path:
    """The cached random-weight snapshot of ``preset`` (generated on first use, atomically).
    ``vision_overrides`` (e.g. ``depth=4``) give a variant, cached under its own name."""
    from .weights import save_random_checkpoint

    preset = preset or DEFAULT_PRESET
    suffix = "".join(f"-{k}{v}" for k, v in sorted(vision_overrides.items()))
    target = cache_dir() / f"random-{preset}-seed{seed}{suffix}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"generating seeded random weights of the {preset} vision tower in {target} (once)")
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".partial-"))
    try:
        save_random_checkpoint(tmp, preset, seed=seed, **vision_overrides)
        tmp.rename(target)
    except OSError:
        if not (target / "config.json").exists():  # not a concurrent writer that won
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _progress(total: int, quiet: bool):
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="blocks", unit="block", disable=quiet, file=sys.stderr, leave=False)

    def tap(name, value):
        if name.startswith("blocks."):
            bar.update(1)

    return bar, tap


def save_output(path: Path, embeddings: np.ndarray, grid_thw: np.ndarray) -> None:
    """``.npy``: the embeddings; ``.npz`` / ``.safetensors``: embeddings and grid_thw."""
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        np.save(path, embeddings)
    elif suffix == ".npz":
        np.savez(path, embeddings=embeddings, grid_thw=grid_thw)
    elif suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file({"embeddings": np.ascontiguousarray(embeddings), "grid_thw": np.ascontiguousarray(grid_thw)},
                  str(path))
    else:
        raise SystemExit(f"error: --out must end in .npy, .npz or .safetensors, got {path.name}")


def cmd_encode(args) -> int:
    import qvlearn

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    model = _model_or_default(args, log)
    encoder = qvlearn.load_encoder(model, backend=args.backend)
    pixel_values, grid_thw = qvlearn.preprocess(images=args.images, min_pixels=args.min_pixels,
                                                max_pixels=args.max_pixels)
    bar, tap = _progress(encoder.config.depth, args.quiet)
    with bar:
        embeddings = encoder(pixel_values, grid_thw, tap=tap)
    embeddings = encoder.backend.to_numpy(embeddings)
    save_output(Path(args.out), embeddings, grid_thw)
    unit = encoder.config.merge_unit
    for image, (t, h, w) in zip(args.images, grid_thw.tolist()):
        print(f"{image}: grid_thw ({t}, {h}, {w}) -> {t * h * w // unit} tokens "
              f"({h * encoder.config.patch_size}x{w * encoder.config.patch_size} px)")
    print(f"wrote {embeddings.shape[0]} tokens x {embeddings.shape[1]} ({embeddings.dtype}) to {args.out}")
    return 0


def _model_or_default(args, log) -> Path:
    if args.model is not None:
        return Path(args.model)
    model = default_model(log=log)
    log(f"no --model given: using seeded random weights of the {DEFAULT_PRESET} vision tower ({model}); "
        "the embeddings have the real shapes but no meaning. Pass --model DIR for a downloaded snapshot.")
    return model


def cmd_taps(args) -> int:
    import json

    import qvlearn

    from .taps import add_natural_order, save_taps

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    model = _model_or_default(args, log)
    pixel_values, grid_thw = qvlearn.preprocess(images=args.images, min_pixels=args.min_pixels,
                                                max_pixels=args.max_pixels)
    config = json.loads((model / "config.json").read_text())
    if args.reference:
        from .reference import reference_tower, reference_trace

        stages = reference_trace(reference_tower(model), pixel_values, grid_thw)
        source, backend = "transformers", "torch"
    else:
        encoder = qvlearn.load_encoder(model, backend=args.backend)
        stages = encoder.trace(pixel_values, grid_thw, to_numpy=True)
        source, backend = "qvlearn", encoder.backend.name
    add_natural_order(stages)
    save_taps(args.out, stages, source=source, config=config, backend=backend)
    print(f"wrote {len(stages)} stages from {source} for grid_thw {grid_thw.tolist()} to {args.out}")
    return 0


def cmd_compare(args) -> int:
    from .taps import compare_taps, format_table, load_taps

    a, _ = load_taps(args.a)
    b, _ = load_taps(args.b)
    rows = compare_taps(a, b, rtol=args.rtol, stages=args.stage)
    print(format_table(rows, args.rtol))
    return 0 if all(r.ok for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qvlearn", description="qvlearn: the Qwen2-VL / Qwen2.5-VL vision encoder in NumPy, checked against transformers")
    sub = parser.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="images -> vision embeddings")
    enc.add_argument("images", nargs="+", help="image files")
    enc.add_argument("--model", help="Hugging Face snapshot directory (default: cached random 7B-shape tower)")
    enc.add_argument("--out", required=True, help="output file: .npy, .npz or .safetensors")
    enc.add_argument("--backend", choices=["numpy", "cupy"], default=None, help="default: $QVLEARN_BACKEND or numpy")
    enc.add_argument("--min-pixels", type=int, default=3136)
    enc.add_argument("--max-pixels", type=int, default=12845056)
    enc.add_argument("--quiet", action="store_true", help="no progress bar or notes")
    enc.set_defaults(func=cmd_encode)

    taps = sub.add_parser("taps", help="write every stage of one forward to a safetensors tap file")
    taps.add_argument("images", nargs="+", help="image files")
    taps.add_argument("--model", help="Hugging Face snapshot directory (default: cached random 7B-shape tower)")
    taps.add_argument("--out", required=True, help="output .safetensors file")
    taps.add_argument("--reference", action="store_true", help="write the taps of transformers' tower instead")
    taps.add_argument("--backend", choices=["numpy", "cupy"], default=None)
    taps.add_argument("--min-pixels", type=int, default=3136)
    taps.add_argument("--max-pixels", type=int, default=12845056)
    taps.add_argument("--quiet", action="store_true")
    taps.set_defaults(func=cmd_taps)

    cmp = sub.add_parser("compare", help="compare two tap files stage by stage (the second is the reference)")
    cmp.add_argument("a", help="tap file to check (e.g. your port's)")
    cmp.add_argument("b", help="reference tap file")
    cmp.add_argument("--rtol", type=float, default=1e-4, help="max |a - b| / max |b| allowed per stage (1e-4)")
    cmp.add_argument("--stage", action="append", help="compare only this stage (repeatable); error if missing")
    cmp.set_defaults(func=cmd_compare)
    return parser


def main(argv=None) -> int:
    from .errors import QvlearnError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except QvlearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
