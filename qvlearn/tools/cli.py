"""Command line (``qvlearn`` once installed, or ``python -m qvlearn``).

    qvlearn encode IMAGE... [--video V...] [--model DIR] --out FILE        vision embeddings (+ grid_thw, DeepStack)
    qvlearn taps IMAGE... [--video V...] [--stages GLOB] [--model DIR] --out FILE [--reference]
    qvlearn compare A.safetensors B.safetensors [--baseline C] [--stage GLOB]  exit 1 beyond tolerance, 3 inputs differ

Every family is read from the snapshot's ``config.json``: Qwen2-VL, Qwen2.5-VL, Qwen3-VL (and -MoE), Qwen3.5 (and
-MoE, the Qwen3.6 and Qwen3.8 releases), Qwen4-Exp, Qwen2.5-Omni and Qwen3-Omni. Without ``--model`` the encoder uses
an embedded default: seeded random weights in the shape of the Qwen2.5-VL-7B vision tower (1.35 GB), written once to
the cache (:mod:`qvlearn.tools.cache`) and reused.

Order of work: the output path and every input are checked first, then the model is generated or loaded, then
the forward runs, and the output is written under a temporary name and renamed (nothing partial is left).
Exit codes: 0 done, 1 ``compare`` found a stage beyond tolerance, 2 bad input (a message, never a traceback),
3 ``compare`` found that the two files' inputs differ (taps of other images: nothing after them judges a port),
130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import signal
import sys
import threading
import warnings
from pathlib import Path

import numpy as np

from ..families import FAMILIES
from .cache import default_model

DEFAULT_PRESET = "qwen2.5-vl-7b"
DEFAULT_SEED = 0
_TITLES = [f.title for f in FAMILIES.values()]
FAMILIES_TEXT = ", ".join(_TITLES[:-1]) + " and " + _TITLES[-1] + " (dense and MoE; Qwen3.6 and Qwen3.8 as Qwen3.5)"
"""Every family of the family table, for the help texts."""
ENCODE_SUFFIXES = (".npy", ".npz", ".safetensors")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def _backend_name(args) -> str:
    return args.backend or os.environ.get("QVLEARN_BACKEND") or "numpy"


def _log(args):
    return (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr))


def _progress(cost, quiet: bool, desc: str = "blocks"):
    """A progress bar on stderr that advances by each block's FLOPs (a full-attention block counts for what it
    costs), so that its time left is right; none under --quiet or when stderr is not a terminal. Returns the bar
    and the tap that moves it."""
    from tqdm.auto import tqdm

    depth = len(cost.block_flops)
    bar = tqdm(total=sum(cost.block_flops) / 1e9, desc=desc, disable=quiet or not sys.stderr.isatty(),
               file=sys.stderr, leave=False, bar_format="{desc} {postfix}: {percentage:3.0f}%|{bar}| "
                                                        "{elapsed} so far, {remaining} left")
    bar.set_postfix_str(f"0/{depth}")

    def tap(name, value):
        if name.startswith("blocks.") and name.count(".") == 1:
            i = int(name.split(".")[1])
            bar.update(cost.block_flops[i] / 1e9)
            bar.set_postfix_str(f"{i + 1}/{depth}")

    return bar, tap


def _matmul_gflops() -> float:
    """This machine's float32 matrix-product speed, measured in about 0.1 s (the best of three 1024^3 products)."""
    import time

    a = np.ones((1024, 1024), np.float32)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        a @ a
        best = min(best, time.perf_counter() - start)
    return 2 * 1024 ** 3 / best / 1e9


ENGINE_SHARE = 0.6  # the engine runs at 57-76% of the measured matmul speed (docs/benchmarks.md)


def check_cost(args, config, grid_thw, log, reference: bool = False):
    """The estimate of the forward, before any model is made or loaded: refused beyond --max-patches (one image or
    frame pair) or --max-memory (default: the memory available now), else logged with the time it should take."""
    from ..cost import available_memory, estimate
    from ..errors import InputError

    cost = estimate(config, grid_thw, reference=reference)
    if cost.largest > args.max_patches:
        raise InputError(f"an image of {cost.largest:,} patches is beyond --max-patches {args.max_patches:,} (the "
                         f"released processors make at most 65,536 of one image); this run would be "
                         f"{cost.summary()}. Lower --min-pixels / --max-pixels, or pass --max-patches "
                         f"{cost.largest} to run it anyway")
    limit = args.max_memory * 1e9 if args.max_memory else available_memory()
    if limit and cost.peak_bytes > limit:
        where = f"--max-memory {args.max_memory:g} GB" if args.max_memory else "the memory available now"
        raise InputError(f"this run needs about {cost.peak_bytes / 1e9:.1f} GB of memory ({cost.summary()}), more "
                         f"than {where} ({limit / 1e9:.1f} GB). Use fewer or smaller images (--max-pixels), or pass "
                         f"--max-memory {cost.peak_bytes / 1e9:.0f} to try anyway")
    if not args.quiet:
        seconds = cost.flops / (ENGINE_SHARE * _matmul_gflops() * 1e9)
        took = f"{seconds / 60:.0f} min" if seconds >= 90 else f"{max(seconds, 1):.0f} s"
        log(f"estimate: {cost.summary()}; roughly {took} on this machine" + (" for qvlearn (transformers' eager "
            "attention is slower)" if reference else ""))
    return cost


def check_out(path: str, suffixes: tuple) -> Path:
    """Refuse an unusable output path before any work is done: the suffix, a folder in the way, a place where no
    file can be created (read-only, permissions, /proc)."""
    from ..atomic import check_writable
    from ..errors import InputError

    if not path:
        raise InputError(f"--out is empty: give a file name ending in {' or '.join(suffixes)}")
    out = Path(path)
    if out.is_dir():
        raise InputError(f"--out {path} is a directory: give a file name ending in {' or '.join(suffixes)}")
    if out.suffix.lower() not in suffixes:
        raise InputError(f"--out must end in {', '.join(suffixes)}, got {out.name}")
    if out.parent.exists() and not out.parent.is_dir():
        raise InputError(f"--out {path}: {out.parent} is not a directory")
    return check_writable(out)


def output_files(path: Path, deepstack: bool) -> list[Path]:
    """Where ``encode`` writes: one file for ``.npz`` / ``.safetensors``; for ``.npy``, which holds one array,
    ``NAME.npy`` (embeddings) beside ``NAME.grid_thw.npy`` and, for Qwen3-VL, ``NAME.deepstack.npy``."""
    if path.suffix.lower() != ".npy":
        return [path]
    stem = path.with_suffix("")
    return [path, Path(f"{stem}.grid_thw.npy")] + ([Path(f"{stem}.deepstack.npy")] if deepstack else [])


def save_output(path: Path, embeddings: np.ndarray, grid_thw: np.ndarray, deepstack=()) -> list[Path]:
    """``.npz`` / ``.safetensors``: ``embeddings``, ``grid_thw`` and ``deepstack.{j}`` (Qwen3-VL); ``.npy``: the
    same as separate files (:func:`output_files`). Each file is written whole or not at all."""
    from ..atomic import atomic_file

    arrays = {"embeddings": np.ascontiguousarray(embeddings), "grid_thw": np.ascontiguousarray(grid_thw)}
    arrays.update({f"deepstack.{j}": np.ascontiguousarray(f) for j, f in enumerate(deepstack)})
    suffix = path.suffix.lower()
    files = output_files(path, bool(len(deepstack)))
    if suffix == ".npy":  # all files appear together: each is renamed only once every one is written
        values = [arrays["embeddings"], arrays["grid_thw"]] + ([np.stack(deepstack)] if len(deepstack) else [])
        with contextlib.ExitStack() as stack:
            for file, value in zip(files, values, strict=True):
                with open(stack.enter_context(atomic_file(file)), "wb") as handle:
                    np.save(handle, value)
    elif suffix == ".npz":
        with atomic_file(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    else:
        from safetensors.numpy import save_file

        with atomic_file(path) as tmp:
            save_file(arrays, str(tmp))
    return files


def _model_config(args):
    """The snapshot's vision config without loading any weights (the default model's from its preset)."""
    from ..config import preset_config, read_config

    if args.model is None:
        return preset_config(DEFAULT_PRESET)
    from ..errors import ConfigError

    model = Path(args.model)
    if model.is_file():
        raise ConfigError(f"--model {model} is a file: give the snapshot directory that holds config.json and the "
                          "safetensors weights")
    return read_config(model)


def _model_dir(args, log) -> Path:
    if args.model is not None:
        return Path(args.model)
    model = default_model(DEFAULT_PRESET, seed=DEFAULT_SEED, log=log, progress=not args.quiet and sys.stderr.isatty())
    log(f"no --model given: using seeded random weights of the {DEFAULT_PRESET} vision tower ({model}); "
        "the embeddings have the real shapes but no meaning. Pass --model DIR for a downloaded snapshot.")
    return model


def expand_video(value: str) -> str | list[str]:
    """One ``--video`` value: an animated file (GIF/PNG/WebP/TIFF) as it is, or the sorted frame files of a folder
    or of a glob pattern (quote it: ``--video 'frames/*.png'``)."""
    from ..errors import InputError

    path = Path(value)
    if path.is_dir():
        frames = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not frames:
            raise InputError(f"--video {value}: the folder holds no image files ({', '.join(IMAGE_SUFFIXES)})")
        return frames
    if glob.has_magic(value):
        frames = sorted(glob.glob(value))
        if not frames:
            raise InputError(f"--video {value!r}: the pattern matches no file")
        return frames
    if path.is_file():
        from PIL import Image

        try:
            with Image.open(path) as opened:
                frames = getattr(opened, "n_frames", 1)
        except Exception:
            frames = None  # not an image: preprocessing says what is wrong with it
        if frames == 1:
            raise InputError(f"--video {value} is a still image (one frame). A video is an animated file, a folder "
                             "of frame files, or a quoted glob of them (--video 'frames/*.png'); pass still images "
                             "without --video")
    return value


def _inputs(args, family: str):
    """pixel_values and grid_thw of the command's images and videos (images first, then videos), preprocessed
    as the model's family is (16-px patches and mean = std = 0.5 for Qwen3-VL / Qwen3.5)."""
    import qvlearn

    videos = [expand_video(v) for v in (args.video or [])]
    if not args.images and not videos:
        raise qvlearn.InputError("nothing to encode: give image files and/or --video FILE (or --video FOLDER, or "
                                 "--video 'frames/*.png')")
    return qvlearn.preprocess(images=args.images or None, videos=videos or None, family=family,
                              min_pixels=args.min_pixels, max_pixels=args.max_pixels)


def _names(args) -> list[str]:
    return list(args.images) + list(args.video or [])


def _check_finite(array: np.ndarray, what: str) -> None:
    from ..errors import InputError

    if not np.all(np.isfinite(array)):
        bad = int(np.sum(~np.all(np.isfinite(array.reshape(array.shape[0], -1)), axis=1)))
        raise InputError(f"{what} hold NaN or Inf in {bad} of {array.shape[0]} rows (a float32 overflow in this "
                         "model?); nothing was written")


def cmd_encode(args) -> int:
    import qvlearn

    log = _log(args)
    out = check_out(args.out, ENCODE_SUFFIXES)
    config = _model_config(args)
    pixel_values, grid_thw = _inputs(args, config.family)
    cost = check_cost(args, config, grid_thw, log)
    encoder = qvlearn.load_encoder(_model_dir(args, log), backend=args.backend)
    if encoder.backend.name != "numpy":
        log(f"backend: {encoder.backend.describe()}")
    bar, tap = _progress(cost, args.quiet)
    with bar:
        embeddings, deepstack = encoder(pixel_values, grid_thw, tap=tap, deepstack=True)
    embeddings = encoder.backend.to_numpy(embeddings)
    deepstack = [encoder.backend.to_numpy(f) for f in deepstack]
    _check_finite(embeddings, "the embeddings")
    files = save_output(out, embeddings, grid_thw, deepstack)
    unit = encoder.config.merge_unit
    for image, (t, h, w) in zip(_names(args), grid_thw.tolist(), strict=True):
        print(f"{image}: grid_thw ({t}, {h}, {w}) -> {t * h * w // unit} tokens "
              f"({h * encoder.config.patch_size}x{w * encoder.config.patch_size} px)")
    extra = (f" and {len(deepstack)} DeepStack features (deepstack.0 .. deepstack.{len(deepstack) - 1})"
             if deepstack else "")
    print(f"wrote {embeddings.shape[0]} tokens x {embeddings.shape[1]} ({embeddings.dtype}), grid_thw{extra} to "
          + ", ".join(map(str, files)))
    return 0


def cmd_taps(args) -> int:
    import qvlearn

    from ..config import read_config_json, vision_config_from_dict
    from .taps import add_natural_order, noise_floors, save_taps, select_stages

    log = _log(args)
    out = check_out(args.out, (".safetensors",))
    vision = _model_config(args)
    if args.stages:  # check the patterns before any work; the inputs and the output are always written
        select_stages(vision, args.stages)
        args.stages = [*args.stages, "pixel_values", "grid_thw", "embeddings"]
    pixel_values, grid_thw = _inputs(args, vision.family)
    cost = check_cost(args, vision, grid_thw, log, reference=args.reference or args.floors)
    if args.reference or args.floors:
        try:
            from .reference import reference_tower, reference_trace
        except ImportError as exc:
            raise qvlearn.QvlearnError(f"taps --reference and --floors run transformers' tower and need torch and "
                                       f"transformers ({exc}); install them with pip install 'qvlearn[reference]' "
                                       "(README: Use it as a library), or drop the flag for qvlearn's taps") from None
    model = _model_dir(args, log)
    config = read_config_json(model)
    vision = vision_config_from_dict(config, source=str(model / "config.json"))

    def transformers_stages():
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        try:
            tower = reference_tower(model)
            log(f"running transformers' {vision.family} tower ({vision.depth} blocks) ...")
            found = reference_trace(tower, pixel_values, grid_thw, stages=args.stages)
        except (qvlearn.QvlearnError, KeyboardInterrupt, MemoryError):
            raise
        except Exception as exc:  # torch's and transformers' own errors on a snapshot qvlearn accepted
            first = " ".join(str(exc).split())[:300]
            raise qvlearn.CheckpointError(f"transformers could not run the {vision.family} tower of {model}: "
                                          f"{type(exc).__name__}: {first}") from None
        return found if args.stages else add_natural_order(found)

    def qvlearn_stages():
        encoder = qvlearn.load_encoder(model, backend=args.backend)
        bar, tap = _progress(cost, args.quiet)
        with bar:
            return encoder.trace(pixel_values, grid_thw, to_numpy=True, stages=args.stages, tap=tap), \
                encoder.backend.name

    if args.reference:
        qvlearn.load_weights(model, vision, dtype="bfloat16")  # qvlearn's checks first: names, shapes, NaN/Inf
        stages, source, backend = transformers_stages(), "transformers", "torch"
        other = qvlearn_stages()[0] if args.floors else None
    else:
        (stages, backend), source = qvlearn_stages(), "qvlearn"
        other = transformers_stages() if args.floors else None
    floors = noise_floors(stages, other) if other is not None else None
    if floors:
        log(f"noise floors of {len(floors)} stages measured against "
            f"{'qvlearn' if args.reference else 'transformers'}, stored in the file's metadata")
    save_taps(out, stages, source=source, config=config, backend=backend, floors=floors)
    print(f"wrote {len(stages)} stages from {source} for grid_thw {grid_thw.tolist()} to {out}")
    return 0


def cmd_compare(args) -> int:
    from .taps import (
        TapError,
        compare_taps,
        exit_code,
        format_table,
        is_stage_name,
        load_taps,
        only_in_one,
        stored_floors,
    )

    for label, path in (("B", args.b), ("--baseline", args.baseline)):
        if path and Path(args.a).exists() and Path(path).exists() and os.path.samefile(args.a, path):
            raise TapError(f"A and {label} are the same file ({path}): comparing a file with itself checks nothing. "
                           "Give your port's taps first and the reference's second")
    if args.baseline and Path(args.b).exists() and Path(args.baseline).exists() and os.path.samefile(args.b,
                                                                                                      args.baseline):
        raise TapError(f"B and --baseline are the same file ({args.baseline}): its noise floor would be zero at every "
                       "stage. The baseline is a second reference (transformers' taps when B is qvlearn's)")
    a, _ = load_taps(args.a)
    b, b_meta = load_taps(args.b)
    baseline = load_taps(args.baseline)[0] if args.baseline else None
    floors = None if baseline is not None else stored_floors(b_meta, args.b)
    rows = compare_taps(a, b, rtol=args.rtol, stages=args.stage, scale_tol=args.scale_tol, baseline=baseline,
                        factor=args.factor, floors=floors)
    print(format_table(rows, args.rtol, args.scale_tol, args.factor))
    if args.stage:
        unknown = sorted(n for n in {*a, *b} if not is_stage_name(n))
        if unknown:
            print(f"not compared, not tap stages: {', '.join(unknown)}")
    identical = [n for n in a if n in b and np.asarray(a[n]).shape == np.asarray(b[n]).shape
                 and np.array_equal(a[n], b[n])]
    if len(identical) == len(set(a) | set(b)):
        print(f"note: the two files hold identical tensors: {Path(args.a).name} may be a copy of "
              f"{Path(args.b).name} (nothing of a port was compared)")
    first, second = only_in_one(a, b)
    if not args.stage:
        for label, names, path in (("only in", first, args.a), ("only in", second, args.b)):
            if names:
                shown = ", ".join(names[:12]) + (f", ... ({len(names)} in all)" if len(names) > 12 else "")
                print(f"not compared, {label} {Path(path).name}: {shown}")
    return exit_code(rows)


def program_name(argv0: str | None = None) -> str:
    """``qvlearn`` when run as the installed command, ``python -m qvlearn`` when run as a module."""
    name = os.path.basename(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else ""))
    return "python -m qvlearn" if name in ("__main__.py", "", "-c") else name


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _threads(text: str) -> int:
    value = _positive(text)
    cpus = os.cpu_count() or 1
    if value > cpus:
        raise argparse.ArgumentTypeError(f"this machine has {cpus} CPUs; more threads than that only slow the work "
                                         f"down (got {value})")
    return value


def _tolerance(text: str) -> float:
    """A tolerance of compare: a finite number above 0 (``1e-5``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number such as 1e-5, got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text}")
    return value


def _factor(text: str) -> float:
    value = _tolerance(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a factor of at least 1 (how many times the noise floor a stage "
                                         f"may reach), got {text}")
    return value


def _add_inputs(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="*", metavar="IMAGE",
                   help="still image files (PNG, JPEG, WebP, ...); the EXIF orientation of phone photos is applied, "
                        "as transformers does")
    p.add_argument("--video", action="append", metavar="VIDEO",
                   help="one video: an animated file (GIF/PNG/WebP/TIFF), a folder of frame files, or a quoted glob "
                        "('frames/*.png', sorted); repeat for several videos (they follow the images)")
    p.add_argument("--model", metavar="DIR",
                   help=f"Hugging Face snapshot directory of {FAMILIES_TEXT}; the family comes from its config.json "
                        f"(default: cached seeded random weights of the {DEFAULT_PRESET} vision tower, 1.35 GB)")
    p.add_argument("--min-pixels", type=_positive, default=None, metavar="N",
                   help="smallest image area after resizing (default: the family's released value: 3136 for "
                        "Qwen2/2.5-VL, 65536 for Qwen3-VL/Qwen3.5)")
    p.add_argument("--max-pixels", type=_positive, default=None, metavar="N",
                   help="largest image area after resizing (default: 12845056 for Qwen2/2.5-VL, 16777216 for "
                        "Qwen3-VL/Qwen3.5)")
    p.add_argument("--backend", choices=["numpy", "cupy"], default=None,
                   help="numpy (CPU) or cupy (NVIDIA GPU); default: $QVLEARN_BACKEND, else numpy")
    p.add_argument("--threads", type=_threads, default=None, metavar="N",
                   help="CPU threads for qvlearn and the BLAS, at most the machine's CPUs (default: every core this "
                        "process may use)")
    p.add_argument("--max-patches", type=_positive, default=65536, metavar="N",
                   help="refuse an image (or frame pair) of more patches than this (default 65536, the most the "
                        "released processors make of one image); the estimate of the run is printed first")
    p.add_argument("--max-memory", type=_tolerance, default=None, metavar="GB",
                   help="refuse a run whose estimated peak memory is above this many GB (default: the memory "
                        "available when it starts)")
    p.add_argument("--quiet", action="store_true", help="no progress bars or notes on stderr")


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog=prog or program_name(),
        description=f"qvlearn: the vision encoder of {FAMILIES_TEXT} in NumPy (CuPy on a GPU), checked stage by "
                    "stage against transformers.",
        epilog="Exit codes: 0 done, 1 compare found a stage beyond tolerance, 2 bad input, 3 compare found that the "
               "inputs differ, 130 interrupted. "
               "More in the README ('Use it as a library') and docs/taps.md (taps and compare).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="{encode,taps,compare}")

    enc = sub.add_parser("encode", help="images and videos -> vision embeddings",
                         description="Preprocess the images and videos as the model's family does, run the vision "
                                     "tower and write the merged embeddings with grid_thw (and, for Qwen3-VL, the "
                                     "DeepStack features).")
    _add_inputs(enc)
    enc.add_argument("--out", required=True, metavar="FILE",
                     help="output file: .npz or .safetensors (embeddings, grid_thw, deepstack.{j}); .npy writes "
                          "NAME.npy (embeddings) beside NAME.grid_thw.npy and NAME.deepstack.npy")
    enc.set_defaults(func=cmd_encode)

    taps = sub.add_parser("taps", help="write every stage of one forward to a safetensors tap file",
                          description="Write the named stages of one forward (golden taps) for a port to compare "
                                      "against with `compare`.")
    _add_inputs(taps)
    taps.add_argument("--stages", action="append", metavar="GLOB",
                      help="keep only these stages (repeatable glob, e.g. 'blocks.0.*' for the insides of block 0, "
                           "'blocks.*.attn.q', 'embeddings', '*' for all); default: every stage outside the blocks' "
                           "insides")
    taps.add_argument("--out", required=True, metavar="FILE", help="output .safetensors tap file")
    taps.add_argument("--reference", action="store_true",
                      help="write the taps of transformers' tower instead (needs torch and transformers)")
    taps.add_argument("--floors", action="store_true",
                      help="also run the other implementation (transformers, or qvlearn with --reference) and store "
                           "each stage's float32 noise floor in the file's metadata: compare then judges a port "
                           "against those floors without --baseline (needs torch and transformers; twice the time)")
    taps.set_defaults(func=cmd_taps)

    cmp = sub.add_parser("compare", help="compare two tap files stage by stage (the second is the reference)",
                         description="Name the first stage where tap file A leaves the tolerance against B.")
    cmp.add_argument("a", help="tap file to check (e.g. your port's)")
    cmp.add_argument("b", help="reference tap file")
    cmp.add_argument("--rtol", type=_tolerance, default=1e-5,
                     help="max |a - b| / max |b| allowed per stage (1e-5: 5x the float32 noise of a 32-block tower)")
    cmp.add_argument("--scale-tol", type=_tolerance, default=1e-6,
                     help="allowed |<a,b>/<b,b> - 1| per stage: a systematic scale error such as a wrong norm eps "
                          "(1e-6; float32 noise stays below 1e-7)")
    cmp.add_argument("--baseline", metavar="FILE",
                     help="a third tap file (e.g. transformers' taps when B is qvlearn's): its difference to B is each "
                          "stage's float32 noise floor, and a stage far above it fails")
    cmp.add_argument("--factor", type=_factor, default=10.0, help="with --baseline: how far above the floor fails (10)")
    cmp.add_argument("--stage", "--stages", dest="stage", action="append", metavar="GLOB",
                     help="compare only the stages this glob matches ('blocks.3.*', 'embeddings'; repeatable); each "
                          "must match a stage both files hold, and other names in the files are then not checked")
    cmp.set_defaults(func=cmd_compare)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line on stderr, ``warning: ...``, without the source line it was raised at."""
    print(f"warning: {message}", file=sys.stderr)


def _first_interrupt(signum, frame):
    """SIGINT: the first one interrupts (KeyboardInterrupt); any later one is ignored while the process ends."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def run(argv=None) -> None:
    """The command's entry point (``qvlearn``, ``python -m qvlearn``): :func:`main`, then exit with its code. After
    Ctrl-C the process ends at once with 130: worker threads still inside an attention block are not waited for
    (a plain return would join them, for minutes), a second Ctrl-C is ignored, and no output file exists yet or
    its temporary was removed as the interrupt unwound (:mod:`qvlearn.atomic`)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _first_interrupt)
    code = main(argv, adopt_blas=argv is None)
    if code == 130:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(130)
    sys.exit(code)


def main(argv=None, adopt_blas: bool = False) -> int:
    """The command line on ``argv`` (default: ``sys.argv[1:]``); returns the exit code. ``adopt_blas``: the
    process's own command line (:func:`run`), which may start again with OpenBLAS's better kernels for this CPU
    (:func:`qvlearn.tools.blas.adopt`) before ``encode`` or ``taps`` on NumPy does any work."""
    from ..errors import QvlearnError

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # image names after an option (`--video clip.gif photo.jpg`): argparse matched IMAGE... earlier
        stray = [e for e in extra if e.startswith("-") and e != "-"]
        if stray or not hasattr(args, "images"):
            parser.error(f"unrecognized arguments: {' '.join(stray or extra)}")
        args.images = list(args.images) + extra
    try:
        if getattr(args, "threads", None):
            from ..engine.parallel import set_threads

            set_threads(args.threads)
        if adopt_blas and args.command in ("encode", "taps") and _backend_name(args) == "numpy":
            from .blas import adopt

            adopt(log=_log(args))
        with warnings.catch_warnings():
            if getattr(args, "quiet", False):
                warnings.simplefilter("ignore")  # --quiet: Pillow's, NumPy's and qvlearn's warnings too
            else:
                warnings.showwarning = _show_warning
            return args.func(args)
    except QvlearnError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; no output was written", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `qvlearn compare A B | head`: the reader left; say nothing more
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
