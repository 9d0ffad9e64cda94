"""Run `make test`'s phases one after the other, every one even when an earlier one failed, and end with one line
per phase and a non-zero exit if any failed.

    python tools/phases.py TARGET [TARGET ...]      each TARGET is a make target of the Makefile

A failing phase does not hide the others: the tests' failures, the notebooks' failures under other numerics and
the newer transformers' failures are all reported by one run. Ctrl-C stops the run at once (exit 130).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time


def main(targets: list[str]) -> int:
    if not targets:
        print("usage: python tools/phases.py TARGET [TARGET ...]", file=sys.stderr)
        return 2
    make = os.environ.get("MAKE", "make")
    results = []
    start = time.monotonic()
    for target in targets:
        print(f"\n== make test, phase {len(results) + 1} of {len(targets)}: {target}", flush=True)
        began = time.monotonic()
        try:
            code = subprocess.call([make, "--no-print-directory", target])
        except KeyboardInterrupt:
            print(f"\n== make test interrupted in phase {target}", flush=True)
            return 130
        results.append((target, code, time.monotonic() - began))
    print("\n== make test: summary", flush=True)
    for target, code, seconds in results:
        verdict = "passed" if code == 0 else f"FAILED (exit {code})"
        print(f"   {target:24s} {verdict:18s} {seconds / 60:5.1f} min")
    failed = [target for target, code, _ in results if code]
    total = (time.monotonic() - start) / 60
    if failed:
        print(f"== make test FAILED in {len(failed)} of {len(results)} phases ({', '.join(failed)}); {total:.1f} min")
        return 1
    print(f"== make test passed: {len(results)} phases in {total:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
