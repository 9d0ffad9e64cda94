"""Command line.

    python -m qvlearn encode IMAGE... [--video FILE...] [--model DIR] --out FILE      vision embeddings
    python -m qvlearn taps IMAGE... [--video FILE...] [--stages GLOB] [--model DIR] --out FILE [--reference]
    python -m qvlearn compare A.safetensors B.safetensors [--baseline C] [--rtol R]  exit 1 if beyond

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


def check_out(path: str, suffixes: tuple) -> Path:
    """Refuse an unusable output path before any work is done."""
    from .errors import InputError

    out = Path(path)
    if out.is_dir():
        raise InputError(f"--out {path} is a directory: give a file name ending in {' or '.join(suffixes)}")
    if out.suffix.lower() not in suffixes:
        raise InputError(f"--out must end in {', '.join(suffixes)}, got {out.name}")
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError(f"--out {path}: {out.parent} is not a directory")
    return out


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
    check_out(args.out, (".npy", ".npz", ".safetensors"))
    model = _model_or_default(args, log)
    encoder = qvlearn.load_encoder(model, backend=args.backend)
    pixel_values, grid_thw = _inputs(args, encoder.family)
    bar, tap = _progress(encoder.config.depth, args.quiet)
    with bar:
        embeddings = encoder(pixel_values, grid_thw, tap=tap)
    embeddings = encoder.backend.to_numpy(embeddings)
    save_output(Path(args.out), embeddings, grid_thw)
    unit = encoder.config.merge_unit
    names = list(args.images) + [" ".join(v) for v in (args.video or [])]
    for image, (t, h, w) in zip(names, grid_thw.tolist()):
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


def _inputs(args, family: str):
    """pixel_values and grid_thw of the command's images and videos (images first, then videos), preprocessed
    as the model's family is (16-px patches and mean = std = 0.5 for Qwen3-VL / Qwen3.5)."""
    import qvlearn

    videos = [v[0] if len(v) == 1 else v for v in (getattr(args, "video", None) or [])]
    if not args.images and not videos:
        raise qvlearn.InputError("nothing to encode: give image files and/or --video FILE (or --video FRAME FRAME ...)")
    return qvlearn.preprocess(images=args.images or None, videos=videos or None, family=family,
                              min_pixels=args.min_pixels, max_pixels=args.max_pixels)


def cmd_taps(args) -> int:
    import qvlearn

    from .config import read_config_json
    from .taps import add_natural_order, save_taps, select_stages

    log = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))
    check_out(args.out, (".safetensors",))
    model = _model_or_default(args, log)
    config = read_config_json(model)
    from .config import vision_config_from_dict

    vision = vision_config_from_dict(config, source=str(model / "config.json"))
    if args.stages:  # check the patterns before any work
        select_stages(vision, args.stages)
    pixel_values, grid_thw = _inputs(args, vision.family)
    if args.reference:
        from .reference import reference_tower, reference_trace

        stages = reference_trace(reference_tower(model), pixel_values, grid_thw, stages=args.stages)
        if not args.stages:
            add_natural_order(stages)
        source, backend = "transformers", "torch"
    else:
        encoder = qvlearn.load_encoder(model, backend=args.backend)
        stages = encoder.trace(pixel_values, grid_thw, to_numpy=True, stages=args.stages)
        source, backend = "qvlearn", encoder.backend.name
    save_taps(args.out, stages, source=source, config=config, backend=backend)
    print(f"wrote {len(stages)} stages from {source} for grid_thw {grid_thw.tolist()} to {args.out}")
    return 0


def cmd_compare(args) -> int:
    from .taps import compare_taps, format_table, load_taps, only_in_one

    a, _ = load_taps(args.a)
    b, _ = load_taps(args.b)
    baseline = load_taps(args.baseline)[0] if args.baseline else None
    rows = compare_taps(a, b, rtol=args.rtol, stages=args.stage, scale_tol=args.scale_tol, baseline=baseline,
                        factor=args.factor)
    print(format_table(rows, args.rtol, args.scale_tol))
    first, second = only_in_one(a, b)
    if not args.stage:
        for label, names, path in (("only in", first, args.a), ("only in", second, args.b)):
            if names:
                shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
                print(f"not compared, {label} {Path(path).name}: {shown}")
    return 0 if all(r.ok for r in rows) else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m qvlearn", description="qvlearn: the Qwen2-VL / Qwen2.5-VL vision encoder in NumPy, checked against transformers")
    sub = parser.add_subparsers(dest="command", required=True)
    video_help = ("a video: one animated image file (GIF/PNG/WebP/TIFF) or its frames as image files; repeat for "
                  "several videos (they follow the images)")
    enc = sub.add_parser("encode", help="images and videos -> vision embeddings")
    enc.add_argument("images", nargs="*", help="image files")
    enc.add_argument("--video", action="append", nargs="+", metavar="FILE", help=video_help)
    enc.add_argument("--model", help="Hugging Face snapshot directory (default: cached random 7B-shape tower)")
    enc.add_argument("--out", required=True, help="output file: .npy, .npz or .safetensors")
    enc.add_argument("--backend", choices=["numpy", "cupy"], default=None, help="default: $QVLEARN_BACKEND or numpy")
    enc.add_argument("--min-pixels", type=int, default=None, help="default: the model family's released value")
    enc.add_argument("--max-pixels", type=int, default=None, help="default: the model family's released value")
    enc.add_argument("--quiet", action="store_true", help="no progress bar or notes")
    enc.set_defaults(func=cmd_encode)

    taps = sub.add_parser("taps", help="write every stage of one forward to a safetensors tap file")
    taps.add_argument("images", nargs="*", help="image files")
    taps.add_argument("--video", action="append", nargs="+", metavar="FILE", help=video_help)
    taps.add_argument("--stages", action="append", metavar="GLOB",
                      help="keep only these stages (repeatable glob, e.g. 'blocks.0.*' for the insides of block 0, "
                           "'blocks.*.attn.q', 'embeddings'); default: every stage outside the blocks' insides")
    taps.add_argument("--model", help="Hugging Face snapshot directory (default: cached random 7B-shape tower)")
    taps.add_argument("--out", required=True, help="output .safetensors file")
    taps.add_argument("--reference", action="store_true", help="write the taps of transformers' tower instead")
    taps.add_argument("--backend", choices=["numpy", "cupy"], default=None)
    taps.add_argument("--min-pixels", type=int, default=None, help="default: the model family's released value")
    taps.add_argument("--max-pixels", type=int, default=None, help="default: the model family's released value")
    taps.add_argument("--quiet", action="store_true")
    taps.set_defaults(func=cmd_taps)

    cmp = sub.add_parser("compare", help="compare two tap files stage by stage (the second is the reference)")
    cmp.add_argument("a", help="tap file to check (e.g. your port's)")
    cmp.add_argument("b", help="reference tap file")
    cmp.add_argument("--rtol", type=float, default=1e-5,
                     help="max |a - b| / max |b| allowed per stage (1e-5: 5x the float32 noise of a 32-block tower)")
    cmp.add_argument("--scale-tol", type=float, default=1e-6,
                     help="allowed |<a,b>/<b,b> - 1| per stage: a systematic scale error such as a wrong norm eps "
                          "(1e-6; float32 noise stays below 1e-7)")
    cmp.add_argument("--baseline", metavar="FILE",
                     help="a third tap file (e.g. transformers' taps when B is qvlearn's): its difference to B is each "
                          "stage's float32 noise floor, and a stage far above it fails")
    cmp.add_argument("--factor", type=float, default=10.0, help="with --baseline: how far above the floor fails (10)")
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
