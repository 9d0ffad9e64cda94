"""Running the command line in a subprocess the way a user does, and what every bad input must give back."""

from __future__ import annotations

import os
import subprocess
import sys

PY = [sys.executable, "-m", "qvlearn"]


def run_cli(*args, env=None, **kw) -> subprocess.CompletedProcess:
    """``python -m qvlearn ARGS...`` with its output captured (``env`` adds variables)."""
    return subprocess.run(PY + [str(a) for a in args], capture_output=True, text=True,
                          env=dict(os.environ, **(env or {})), **kw)


def assert_clean(proc, code=2, message=None) -> None:
    """The process ended with ``code``, printed no traceback and, if given, said ``message`` on stderr."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    if message is not None:
        assert message in proc.stderr, proc.stderr
