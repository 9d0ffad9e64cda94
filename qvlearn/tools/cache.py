"""The cache of seeded random-weight snapshots (the CLI's default model and the notebooks' towers).

``$QVLEARN_CACHE``, else ``$XDG_CACHE_HOME/qvlearn``, else ``~/.cache/qvlearn``. One folder per preset, seed and
override set (``random-qwen2.5-vl-7b-seed0``: 1.35 GB in bf16). An entry is built under a temporary name and renamed
when complete, under a lock, so two processes never build it twice and a build killed half-way (``kill -9``, a
power cut) is removed by the next one instead of staying in the cache for good.
"""

from __future__ import annotations

import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

from ..atomic import atomic_directory, stale_partials
from ..errors import OutputError

ENV_VAR = "QVLEARN_CACHE"


def cache_dir() -> Path:
    if os.environ.get(ENV_VAR):
        path = Path(os.environ[ENV_VAR]).expanduser()
        if not path.is_absolute():
            raise OutputError(f"${ENV_VAR}={os.environ[ENV_VAR]} is a relative path: the cache (1.35 GB for the "
                              f"default model) would land in whichever folder a command runs from. Set an absolute "
                              f"path, e.g. "
                              f"{ENV_VAR}={Path(os.environ[ENV_VAR]).resolve()}")
        return path
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "qvlearn"


def entry_name(preset: str, seed: int = 0, **vision_overrides) -> str:
    suffix = "".join(f"-{k}{v}" for k, v in sorted(vision_overrides.items()))
    return f"random-{preset}-seed{seed}{suffix}"


@contextmanager
def _locked(lock_path: Path, log=print, what: str = "the cache entry"):
    """An exclusive advisory lock (``flock``) on ``lock_path``; a no-op where the system has none (Windows). When
    another process holds it, ``log`` says so before this one waits."""
    try:
        import fcntl
    except ImportError:
        yield
        return
    with open(lock_path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for another qvlearn process, which is building {what} (lock {lock_path}) ...")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _human(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.1f} MB"


def default_model(preset: str, seed: int = 0, log=print, progress: bool = False, **vision_overrides) -> Path:
    """The cached random-weight snapshot of ``preset``, built on first use (size and, with ``progress``, a progress
    bar on stderr). ``vision_overrides`` (e.g. ``depth=4``) give a variant, cached under its own name."""
    from ..config import preset_config
    from ..weights import checkpoint_bytes, save_random_checkpoint

    target = cache_dir() / entry_name(preset, seed, **vision_overrides)
    if (target / "config.json").exists():
        return target
    cfg = preset_config(preset, **vision_overrides)  # unknown presets and fields fail here, before any writing
    size = checkpoint_bytes(cfg)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock = target.parent / f".{target.name}.lock"
        lock.touch()
    except OSError as exc:
        raise OutputError(f"cannot use the cache folder {target.parent} ({exc.strerror or exc}); set ${ENV_VAR} to a "
                          f"writable folder with {_human(size)} free") from None
    with _locked(lock, log, str(target)):
        if (target / "config.json").exists():  # another process built it while we waited
            return target
        for stale in stale_partials(target):  # left by a build that was killed: nobody else holds the lock
            shutil.rmtree(stale, ignore_errors=True)
        if target.exists():  # a folder without config.json: a pre-atomic leftover
            shutil.rmtree(target, ignore_errors=True)
        free = shutil.disk_usage(target.parent).free
        if free < size * 1.05:
            raise OutputError(f"the {preset} random snapshot needs {_human(size)} in {target.parent}, which has "
                              f"{_human(free)} free; free some space or set ${ENV_VAR} to another folder")
        log(f"generating seeded random weights of the {preset} vision tower ({_human(size)} in bf16) in {target} "
            "(once; later runs reuse it)")
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1000, desc="random weights",
                       file=sys.stderr, leave=False)
        try:
            with atomic_directory(target) as tmp:
                step = (lambda n: bar.update(2 * n)) if bar else None  # bf16: 2 bytes a value
                save_random_checkpoint(tmp, preset, seed=seed, progress=step, **vision_overrides)
        finally:
            if bar is not None:
                bar.close()
    return target
