"""Files that appear whole or not at all.

Every file qvlearn writes (embeddings, tap files, checkpoints, cache entries) is written under a temporary name in
its own folder and renamed into place once complete: a full disk, an error or Ctrl-C leaves the old file (or none),
never a truncated one. Files get the mode the user's umask gives (``0o666 & ~umask``), not ``mkstemp``'s 0600.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .errors import OutputError

PARTIAL_SUFFIX = ".partial"


def umask() -> int:
    """The process's umask, read without changing it where the system allows (Linux)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)  # elsewhere: the classic read-and-restore
    os.umask(mask)
    return mask


def file_mode() -> int:
    return 0o666 & ~umask()


def dir_mode() -> int:
    return 0o777 & ~umask()


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_writable(path: str | os.PathLike, what: str = "--out") -> Path:
    """Refuse, before any work, an output path whose folder cannot take a new file: probe with a real temporary
    file in the nearest folder that exists (permissions, read-only file systems and /proc all answer)."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    while not folder.exists():
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{what} {path}: {folder} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".qvlearn-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"{what} {path}: cannot create a file in {folder} ({_why(exc)}); choose a writable "
                          "place") from None
    return path


@contextmanager
def atomic_file(path: str | os.PathLike) -> Iterator[Path]:
    """``with atomic_file(p) as tmp: write(tmp)``: the file appears at ``p`` only when the block finishes."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX)
        os.close(fd)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {_why(exc)}") from None
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise OutputError(f"cannot write {path}: {_why(exc)}; nothing was written") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """A folder built under a temporary name beside ``path`` and renamed into place when complete."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX))
    except OSError as exc:
        raise OutputError(f"cannot create {path}: {_why(exc)}") from None
    try:
        yield tmp
        os.chmod(tmp, dir_mode())
        os.rename(tmp, path)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"cannot write {path}: {_why(exc)}; nothing was written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def stale_partials(path: str | os.PathLike) -> list[Path]:
    """Temporary siblings of ``path`` left by a writer that was killed (``kill -9``, a power cut)."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.*{PARTIAL_SUFFIX}"))
