"""Each notebook's **Words** line: the course's words that the notebook uses, each with its short meaning.

    python tools/course_words.py            rewrite the line in every notebook whose words changed
    python tools/course_words.py --check    exit 1 naming each notebook whose line is missing or stale

The words and their short meanings are docs/glossary.md's table (its first and third columns); a notebook uses a
word when its prose (markdown outside tables, the Words line itself excluded) contains it. The line is a bullet
of the header cell, right after its "Time" bullet, so a reader meets every word's meaning before the notebook
uses it. Only markdown changes: the notebooks' outputs, and so nbval, are untouched.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "docs" / "glossary.md"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
PREFIX = "* **Words**: "
ANCHOR = "* **Time**"


def words() -> list[tuple[str, str, re.Pattern]]:
    """(word as written, short meaning, pattern that finds it in prose) for each row of the glossary's table."""
    rows = []
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) != 3 or cells[0] in ("word", "---|---|---") or set(cells[0]) <= set("-|"):
            continue
        word, _, short = cells
        bare = word.strip("`")
        stem = re.escape(bare).replace(r"\ ", "[- ]")  # "merge block" also as "merge-block order"
        rows.append((word, short, re.compile(rf"(?<![\w-]){stem}(?:e?s)?(?![\w-])", re.I)))
    if not rows:
        raise SystemExit(f"course_words: no word table found in {GLOSSARY.relative_to(ROOT)}")
    return rows


def prose(notebook: dict) -> str:
    text = []
    for cell in notebook["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                if not line.lstrip().startswith("|") and not line.startswith(PREFIX):
                    text.append(re.sub(r"\]\([^)]*\)", "]", line))  # link targets are not prose
    return "\n".join(text)


def line_for(notebook: dict, table) -> str | None:
    used = [(word, short) for word, short, pattern in table if pattern.search(prose(notebook))]
    if not used:
        return None
    return PREFIX + "; ".join(f"**{word}**: {short}" for word, short in used) + "."


def updated(path: Path, table) -> tuple[dict, bool]:
    """The notebook with its Words line written; whether that changed anything."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    header = notebook["cells"][0]
    lines = "".join(header["source"]).split("\n")
    old = [i for i, line in enumerate(lines) if line.startswith(PREFIX)]
    wanted = line_for(notebook, table)
    kept = [line for i, line in enumerate(lines) if i not in old]
    if wanted is not None:
        at = next((i for i, line in enumerate(kept) if line.startswith(ANCHOR)), None)
        if at is None:
            raise SystemExit(f"course_words: {path.name}'s first cell has no '{ANCHOR}' bullet to put the Words "
                             "line after")
        kept.insert(at + 1, wanted)
    new = "\n".join(kept)
    changed = new != "\n".join(lines)
    header["source"] = new.splitlines(keepends=True)
    return notebook, changed


def main(argv: list[str]) -> int:
    table = words()
    stale = []
    for path in NOTEBOOKS:
        notebook, changed = updated(path, table)
        if not changed:
            continue
        stale.append(path.name)
        if "--check" not in argv:
            path.write_text(json.dumps(notebook, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    if "--check" in argv and stale:
        print("course_words: the Words line is missing or stale in " + ", ".join(stale)
              + ": run python tools/course_words.py", file=sys.stderr)
        return 1
    print(f"course_words: {len(stale)} notebooks {'would change' if '--check' in argv else 'rewritten'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
