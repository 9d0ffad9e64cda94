"""qvlearn at an earlier revision against qvlearn now, with transformers beside both, in one run on this machine.

    python tools/bench_revisions.py REV [--cases qwen2.5-vl-7b:588x784 ...] [--repeat 3] [--tiny]

A change to the engine or the spec must not make it slower: this checks out REV into build/revisions/REV (a git
worktree, removed afterwards), then for each case runs the benchmark's own worker (`python -m qvlearn.tools.bench
--worker ...`, each in its own process) three times in a row: qvlearn at REV, qvlearn now, transformers. Running
them case by case, back to back, keeps the machine's drift out of the comparison; the ratios against transformers
are what to compare. Prints a Markdown table: medians, the spread of the timed forwards, ratios and peak memory.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CASES = ["qwen2.5-vl-7b:588x784", "qwen2-vl-2b:588x784", "qwen3-vl-8b:768x768", "qwen2.5-omni-7b:588x784"]
TINY_CASES = ["tiny-qwen2.5-vl:112x112"]


def worker(impl: str, preset: str, height: int, width: int, repeat: int, warmup: int, root: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(root))
    cmd = [sys.executable, "-m", "qvlearn.tools.bench", "--worker", impl, "--preset", preset, "--height",
           str(height), "--width", str(width), "--repeat", str(repeat), "--warmup", str(warmup), "--weights-dtype",
           "float32", "--depth", "0", "--backend", "numpy", "--device", "cpu", "--torch-dtype", "float32"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root.parent)
    if proc.returncode:
        return {"error": (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def case(text: str) -> tuple[str, int, int]:
    try:
        preset, size = text.split(":")
        height, width = (int(v) for v in size.split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not PRESET:HEIGHTxWIDTH, e.g. qwen2.5-vl-7b:588x784") from None
    return preset, height, width


def cell(result: dict) -> str:
    if "error" in result:
        return f"failed: {result['error']}"
    times = result["times"]
    return f"{result['median']:.2f} ({min(times):.2f}–{max(times):.2f})"


def table(rows, rev: str) -> str:
    lines = [f"| case | qvlearn at {rev} s | qvlearn now s | transformers s | ratio at {rev} | ratio now | "
             f"peak RSS at {rev} GiB | peak RSS now GiB |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, before, after, ref in rows:
        ok = all("error" not in r for r in (before, after, ref))
        ratio = (lambda r: f"{r['median'] / ref['median']:.3f}") if ok else (lambda r: "n/a")
        memory = (lambda r: f"{r['peak_rss'] / 2 ** 30:.2f}") if ok else (lambda r: "n/a")
        lines.append(f"| {name} | {cell(before)} | {cell(after)} | {cell(ref)} | {ratio(before)} | {ratio(after)} | "
                     f"{memory(before)} | {memory(after)} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the earlier revision (a commit, tag or branch)")
    parser.add_argument("--cases", nargs="+", type=case, help="PRESET:HEIGHTxWIDTH (default: the four 2352-patch "
                        "cases of the 7B, 2B, Qwen3-VL-8B and Qwen2.5-Omni towers)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--tiny", action="store_true", help="one tiny case, one forward: a smoke run")
    args = parser.parse_args(argv)
    cases = args.cases or [case(c) for c in (TINY_CASES if args.tiny else DEFAULT_CASES)]
    repeat, warmup = (1, 0) if args.tiny else (args.repeat, args.warmup)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", args.rev], capture_output=True,
                            text=True)
    if commit.returncode:
        print(f"bench_revisions: {args.rev!r} is not a revision of this repository", file=sys.stderr)
        return 2
    rev = commit.stdout.strip()
    tree = ROOT / "build" / "revisions" / rev
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--force", "--detach", str(tree), rev],
                   check=True, capture_output=True)
    try:
        rows = []
        for preset, height, width in cases:
            results = [worker("qvlearn", preset, height, width, repeat, warmup, tree),
                       worker("qvlearn", preset, height, width, repeat, warmup, ROOT),
                       worker("transformers", preset, height, width, repeat, warmup, ROOT)]
            rows.append((f"{preset} {height}x{width}", *results))
            print(f"bench_revisions: {preset} {height}x{width}: " + ", ".join(cell(r) for r in results), flush=True)
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    print(table(rows, rev))
    return 0 if all("error" not in r for row in rows for r in row[1:]) else 1


if __name__ == "__main__":
    sys.exit(main())
