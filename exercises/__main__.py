"""python -m exercises [NN ...] [--solutions]: check your exercises (or the solutions) and say what is wrong."""

from __future__ import annotations

import argparse
import importlib
import sys

from .checks import EXERCISES, NotYet

MODULES = {"01": "ex01_preprocessing", "02": "ex02_patch_embed", "03": "ex03_rope", "04": "ex04_windows",
           "05": "ex05_norms", "06": "ex06_attention", "07": "ex07_merger", "08": "ex08_encoder", "09": "ex09_videos",
           "10": "ex10_bridge",
           "11": "ex11_precision", "12": "ex12_debugging", "13": "ex13_qwen3", "14": "ex14_capstone"}


def run(notebooks, solutions: bool = False, out=print) -> int:
    """Check the exercises of ``notebooks``; print one line each; return how many are not solved."""
    failed = 0
    for nb in notebooks:
        module = importlib.import_module(f"exercises.{'solutions.' if solutions else ''}{MODULES[nb]}")
        for key, ex in EXERCISES.items():
            if key.split(".")[0] != nb:
                continue
            try:
                ex.check(getattr(module, ex.function))
                out(f"  {key} {ex.function:28s} solved")
            except NotYet as err:
                failed += 1
                out(f"  {key} {ex.function:28s} to do: {err}")
    return failed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m exercises", description=__doc__)
    parser.add_argument("notebooks", nargs="*", metavar="NN",
                        help=f"notebook numbers ({', '.join(MODULES)}); all if none")
    parser.add_argument("--solutions", action="store_true", help="check exercises/solutions/ instead of your files")
    args = parser.parse_args(argv)
    chosen = [n.zfill(2) for n in args.notebooks] or list(MODULES)
    unknown = [n for n in chosen if n not in MODULES]
    if unknown:
        parser.error(f"no exercises for notebook {', '.join(unknown)}; choose from {', '.join(MODULES)}")
    failed = run(chosen, args.solutions)
    total = sum(1 for k in EXERCISES if k.split(".")[0] in chosen)
    print(f"{total - failed} of {total} solved")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
