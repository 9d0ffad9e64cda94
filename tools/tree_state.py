"""Prove that a test run leaves the repository as it found it.

    python tools/tree_state.py save      before the tests: fingerprint every tracked and untracked file
    python tools/tree_state.py check     after them: exit 1 naming each file the run wrote, added or removed

`make test` brackets the whole suite with these two calls: tests and notebooks under nbval never modify
tracked files (only `make notebooks` writes figures into images/). Ignored files (.venv, caches) do not count.
Outside a git checkout both calls say so and do nothing.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".cache" / "tree-state.json"


def fingerprint() -> dict[str, str] | None:
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    state = {}
    for name in sorted(set(listed.decode().split("\0")) - {""}):
        path = ROOT / name
        state[name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "(missing)"
    return state


def main(argv) -> int:
    if argv not in (["save"], ["check"]):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    now = fingerprint()
    if now is None:
        print("tree_state: not a git checkout; the clean-tree check is skipped")
        return 0
    if argv == ["save"]:
        STATE.parent.mkdir(parents=True, exist_ok=True)
        STATE.write_text(json.dumps(now))
        return 0
    if not STATE.exists():
        print("tree_state: no saved state; run `python tools/tree_state.py save` before the tests", file=sys.stderr)
        return 2
    before = json.loads(STATE.read_text())
    changed = sorted(n for n in before.keys() & now.keys() if before[n] != now[n])
    added, removed = sorted(now.keys() - before.keys()), sorted(before.keys() - now.keys())
    if changed or added or removed:
        print("The test run modified the repository (tests and notebooks must write to temporary places):",
              file=sys.stderr)
        for label, names in (("modified", changed), ("new", added), ("removed", removed)):
            for name in names:
                print(f"  {label}: {name}", file=sys.stderr)
        return 1
    print(f"tree_state: the test run left all {len(now)} files of the working tree unchanged")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
