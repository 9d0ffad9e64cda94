"""The notebooks as committed: nbval only compares cells that were executed, so a stripped, half-run
or out-of-order notebook would pass it silently. These checks make that a failure."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).parent.parent / "notebooks").glob("*.ipynb"))
README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")


def test_there_are_notebooks():
    assert len(NOTEBOOKS) >= 12


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_was_executed_top_to_bottom(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    assert None not in counts, f"{path.name}: never-executed code cells; run `make notebooks`"
    assert counts == list(range(1, len(code) + 1)), f"{path.name}: cells run out of order: {counts}"
    for cell in code:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"{path.name}: a stored error ({out.get('ename')})"
            if out["output_type"] == "stream":
                assert out["name"] != "stderr", f"{path.name}: stderr output (warnings?): {''.join(out['text'])[:200]}"
    first = "".join(code[0]["source"])
    assert "NBVAL_IGNORE_OUTPUT" in first and "versions()" in first, f"{path.name}: first cell must print versions"
    source = "\n".join("".join(c["source"]) for c in code)
    assert "check_close" in source or "assert" in source, f"{path.name}: no parity check"
    assert path.name in README, f"{path.name} is missing from the README's table of notebooks"


# --- outputs that would differ on another machine -------------------------------------------------------------

NBVAL_MARKERS = ("NBVAL_IGNORE_OUTPUT", "NBVAL_CHECK_OUTPUT", "NBVAL_SKIP", "NBVAL_RAISES_EXCEPTION")
FLOAT = re.compile(r"(?<![\w.])-?(?:\d+\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)(?![\w.])")
MAX_DIGITS = 8  # the config constants (CLIP mean 0.48145466) have 8; a float64 repr of a result has 15-17


def significant_digits(literal: str) -> int:
    mantissa = re.split("[eE]", literal.lstrip("-"))[0]
    return len(mantissa.replace(".", "").lstrip("0"))


def marker_problems(source: str) -> list[str]:
    """Comments that mention an nbval marker but that nbval will not recognise: nbval only honours a comment
    line that is exactly ``# NBVAL_...`` (text after it turns the marker off, silently)."""
    found = []
    for line in source.splitlines():
        text = line.strip()
        if text.startswith("#") and "NBVAL_" in text and text.lstrip("#").strip() not in NBVAL_MARKERS:
            found.append(f"{text[:70]!r} is not an nbval marker (it must be the whole comment: '# NBVAL_...')")
    return found


def output_problems(cell: dict) -> list[str]:
    """Stored outputs of a compared cell whose text depends on the BLAS kernel, the CPU or the thread count:
    floats printed with more digits than any check guarantees, and bare NumPy scalar reprs."""
    source = "".join(cell["source"])
    if any(f"# {m}" in source for m in ("NBVAL_IGNORE_OUTPUT", "NBVAL_SKIP")):
        return []
    found = []
    for out in cell.get("outputs", []):
        text = "".join(out.get("text", "")) + "".join((out.get("data") or {}).get("text/plain", ""))
        for match in FLOAT.finditer(text):
            if significant_digits(match.group(0)) > MAX_DIGITS:
                found.append(f"stores {match.group(0)}: a float with machine-specific digits (print the tolerance "
                             f"that was met instead, or round to what the check guarantees)")
        for match in re.finditer(r"np\.(float|int)\d+\(", text):
            found.append(f"stores a NumPy scalar repr ({match.group(0)}...): print it through a format")
    return found


def test_the_checks_catch_what_they_are_about():
    """The failures seen on another machine: a check helper's float left as the cell's value, and a marker
    comment with text after it."""
    cell = {"source": ["check_close(a, b)"], "outputs": [
        {"output_type": "execute_result", "data": {"text/plain": "1.0695726891809125e-06"}}]}
    assert output_problems(cell)
    cell["outputs"][0]["data"]["text/plain"] = "np.float32(0.56)"
    assert output_problems(cell)
    cell["outputs"][0]["data"]["text/plain"] = "mean: (0.48145466, 0.4578275) | relative error <= 1e-05"
    assert not output_problems(cell)
    cell["source"] = ["# NBVAL_IGNORE_OUTPUT\n", "print(x)"]
    cell["outputs"][0]["data"]["text/plain"] = "1.0695726891809125e-06"
    assert not output_problems(cell)
    assert marker_problems("# NBVAL_IGNORE_OUTPUT  (the exact digits depend on the BLAS build)\nx")
    assert marker_problems("#NBVAL_SKIP because slow")
    assert not marker_problems("# NBVAL_IGNORE_OUTPUT\n# (the digits depend on the BLAS build)")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_stored_output_depends_on_the_machine(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for index, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "code":
            problems += [f"cell {index}: {p}" for p in marker_problems("".join(cell["source"])) + output_problems(cell)]
    assert not problems, f"{path.name}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_kernelspec_is_the_one_make_installs(path):
    """JupyterLab rewrites a notebook whose stored kernelspec differs from the kernel it starts (the notebook opens
    modified, autosave rewrites it). `make setup` runs `ipykernel install --name python3`: store what it writes."""
    from ipykernel.kernelspec import get_kernel_dict

    installed = get_kernel_dict()
    spec = json.loads(path.read_text(encoding="utf-8"))["metadata"]["kernelspec"]
    assert spec == {"display_name": installed["display_name"], "language": installed["language"], "name": "python3"}


def test_running_notebooks_does_not_write_into_the_repository():
    """Figures go to images/ only under `make notebooks`; a notebook calling fig.savefig on a repository path
    would rewrite a tracked file on every test run."""
    for path in NOTEBOOKS:
        source = "\n".join("".join(c["source"]) for c in json.loads(path.read_text(encoding="utf-8"))["cells"])
        assert ".savefig(" not in source, f"{path.name}: use qvlearn.tools.course.save_figure, not fig.savefig"
        assert "../images/" not in source.replace("](../images/", ""), f"{path.name}: writes into ../images/"


# --- claims that go stale: links, cut tables, sections ----------------------------------------------------------
ROOT = Path(__file__).parent.parent
TEXTS = NOTEBOOKS + [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "exercises" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")
CUT_SLICE = re.compile(r"\{[^{}\n]*\[:\d{2,}\][^{}\n]*\}")   # `{text[:62]}` in an f-string: a table cell cut mid-word
SECTION = re.compile(r"§\s?(\d+)")


def _prose(path: Path) -> list[tuple[str, str]]:
    """(where, text) of every markdown cell and stored text output of a notebook, or the whole text of a file."""
    if path.suffix != ".ipynb":
        return [(path.name, path.read_text(encoding="utf-8"))]
    nb = json.loads(path.read_text(encoding="utf-8"))
    found = []
    for i, cell in enumerate(nb["cells"]):
        if cell["cell_type"] == "markdown":
            found.append((f"{path.name} cell {i}", "".join(cell["source"])))
        for out in cell.get("outputs", []):
            found.append((f"{path.name} cell {i} output", "".join(out.get("text", ""))
                          + "".join((out.get("data") or {}).get("text/plain", ""))))
    return found


def link_problems(path: Path, text: str) -> list[str]:
    bad = []
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "#", "mailto:")):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            bad.append(f"{target} does not exist")
    return bad


def section_problems(path: Path, text: str) -> list[str]:
    """A § must name a paper's section ('the Qwen2-VL report, §2.1') or a section of a notebook that has it
    ('notebook 1, §6'); the project's spec is not in the repository, so 'spec §...' points nowhere."""
    bad = []
    for match in SECTION.finditer(text):
        before = text[max(0, match.start() - 80): match.start()]
        notebook = re.search(r"notebook (\d+)(?:\]\([^)]*\))?, $", before)
        if notebook:
            target = next((p for p in NOTEBOOKS if p.name.startswith(f"{int(notebook.group(1)):02d}_")), None)
            headings = "\n".join("".join(c["source"]) for c in json.loads(target.read_text())["cells"]
                                 if c["cell_type"] == "markdown") if target else ""
            if not re.search(rf"^## {match.group(1)}\.", headings, re.M):
                bad.append(f"{before.strip()} §{match.group(1)}: that notebook has no section {match.group(1)}")
        elif not re.search(r"report,? \(?$", before):
            bad.append(f"...{before.strip()} §{match.group(1)}: not a section of anything in the repository")
    return bad


def test_the_claim_checks_catch_what_they_are_about(tmp_path):
    page = tmp_path / "page.md"
    assert link_problems(page, "see [12](12_debugging_a_port.ipynb)") == ["12_debugging_a_port.ipynb does not exist"]
    assert link_problems(NOTEBOOKS[0], "see [12](12_debugging_a_port.ipynb) and [web](https://x.org)") == []
    assert section_problems(page, "spec checklist §11.3 (no public report found)")
    assert section_problems(page, "as the notebook 1, §9 says")
    assert not section_problems(page, "the Qwen2-VL report (§2.1) and the Qwen2.5-VL report, §2.1; notebook 1, §6")
    assert not section_problems(page, "as [notebook 1](01_preprocessing.ipynb), §6 shows")
    assert section_problems(page, "as [notebook 1](01_preprocessing.ipynb), §9 says")
    assert CUT_SLICE.search('print(f"{name:25s} {bug.reported[:60]}")')
    assert not CUT_SLICE.search("print(f\"{x[:3]} {rows[2:]}\")")


@pytest.mark.parametrize("path", TEXTS, ids=lambda p: p.name)
def test_links_and_section_references_resolve(path):
    problems = [f"{where}: {p}" for where, text in _prose(path) for p in link_problems(path, text)
                + section_problems(path, text)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_no_printed_table_cuts_its_text(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    cut = [m.group(0) for c in nb["cells"] if c["cell_type"] == "code"
           for m in CUT_SLICE.finditer("".join(c["source"]))]
    assert not cut, f"{path.name}: text cut to a width inside a printed table ({cut}); wrap it (textwrap) instead"


def test_previous_and_next_links_walk_the_course_in_order():
    names = [p.name for p in NOTEBOOKS]
    for i, path in enumerate(NOTEBOOKS):
        last = "".join(json.loads(path.read_text(encoding="utf-8"))["cells"][-1]["source"])
        links = dict(re.findall(r"(Previous|Next): \[[^\]]*\]\(([^)]*)\)", last))
        assert links.get("Previous") == names[i - 1], (path.name, links)   # the tour's Previous is the last notebook
        if i + 1 < len(names):
            assert links.get("Next") == names[i + 1], (path.name, links)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_opens_with_objectives_prerequisites_and_time(path):
    first = "".join(json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"])
    for field in ("**You will**", "**Prerequisites**", "**Time**"):
        assert field in first, f"{path.name}: the first cell has no {field}"


# --- pointers that must resolve ------------------------------------------------------------------------------
EXERCISES_README = (Path(__file__).parent.parent / "exercises" / "README.md").read_text(encoding="utf-8")


def _markdown(path) -> str:
    nb = json.loads(path.read_text(encoding="utf-8"))
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_question_pointer_has_its_question(path):
    """A notebook that sends the reader to "a question ... with its answer" in exercises/README.md has one there."""
    if "with its answer" in _markdown(path) and "exercises/README.md" in _markdown(path):
        number = path.name[:2]
        assert f"* **{number}.**" in EXERCISES_README, f"exercises/README.md has no question for notebook {number}"


def test_the_tour_lists_every_notebook():
    tour = _markdown(NOTEBOOKS[0])
    listed = set(re.findall(r"^\| (\d\d) \|", tour, re.M))
    assert listed == {p.name[:2] for p in NOTEBOOKS[1:]}, sorted(listed)


def test_the_exercise_tables_are_in_order():
    rows = re.findall(r"^\| (\d\d) [a-z]", EXERCISES_README, re.M)
    questions = re.findall(r"^\* \*\*(\d\d)\.\*\*", EXERCISES_README, re.M)
    assert rows == sorted(rows) and questions == sorted(questions), (rows, questions)


# --- every notebook defines the course's words it uses, in its header ------------------------------------------

def _course_words():
    import importlib.util

    spec = importlib.util.spec_from_file_location("qvlearn_tools_course_words", ROOT / "tools" / "course_words.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_notebook_defines_the_words_it_uses_in_its_header():
    words = _course_words()
    stale = [p.name for p in words.NOTEBOOKS if words.updated(p, words.words())[1]]
    assert not stale, f"the Words line is missing or stale in {stale}: run python tools/course_words.py"


def test_the_words_line_follows_the_prose():
    """A notebook that starts to use 'segment' (or stops using 'tap') gets a stale line: the check above fails."""
    words = _course_words()
    table = words.words()
    notebook = {"cells": [{"cell_type": "markdown", "source": "# N\n\n* **Time**: 5 minutes.\n"},
                          {"cell_type": "markdown", "source": "Each segment of merge-block rows.\n| tap | table |"}]}
    line = words.line_for(notebook, table)
    assert line.startswith("* **Words**: **merge block**: 2×2") and "**segment**: rows that attend" in line
    assert "**tap**" not in line  # table rows are not prose
    assert words.line_for({"cells": [{"cell_type": "markdown", "source": "Nothing here."}]}, table) is None


# --- each learner notebook's main path fits in about 30 minutes ------------------------------------------------

def reading_minutes(path: Path) -> float:
    """A reader's time for a notebook's main path: prose at 150 words a minute, code at 8 lines a minute, a figure
    1.5 minutes; sections whose heading says "deep dive" and the header's Words line and tables are left out."""
    words = lines = figures = 0
    deep = False
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            if text.startswith("## "):
                deep = "deep dive" in text.split("\n")[0].lower()
            if not deep:
                words += len(re.findall(r"\w+", "\n".join(line for line in text.split("\n")
                                                          if not line.startswith(("* **Words**", "|")))))
        elif not deep:
            if re.search(r"plt\.|fig, ", text):
                figures += 1
            else:
                lines += sum(1 for line in text.split("\n") if line.strip() and not line.strip().startswith("#"))
    return words / 150 + lines / 8 + figures * 1.5


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_stated_time_is_honest_and_a_learner_notebook_takes_about_30_minutes(path):
    first = "".join(json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"])
    stated = int(re.search(r"\*\*Time\*\*: (?:about )?(\d+) minutes", first).group(1))
    estimate = reading_minutes(path)
    assert 0.6 * estimate <= stated <= 2 * estimate + 5, f"{path.name}: states {stated} min, reads in ~{estimate:.0f}"
    if "Track: **learner**" in first:
        assert stated <= 30 and estimate <= 33, f"{path.name}: {stated} min stated, ~{estimate:.0f} estimated: " \
                                                "move a section to a deep dive or to the porter's track"


def _names(source: str) -> tuple[set[str], set[str]]:
    """(names a cell binds, names it reads) — a cell that does not parse (a %magic) binds and reads nothing."""
    import ast

    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set(), set()
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.arg):
            bound.add(node.arg)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return bound, read


def deep_dive_leaks(cells: list[dict]) -> list[str]:
    """Names that a main-path cell reads whose only binding so far came from a deep-dive section."""
    from_deep, leaks, deep = set(), [], False
    for number, cell in enumerate(cells):
        text = "".join(cell["source"])
        if cell["cell_type"] == "markdown":
            if text.startswith("## "):
                deep = "deep dive" in text.split("\n")[0].lower()
            continue
        bound, read = _names(text)
        if deep:
            from_deep |= bound
        else:
            leaks += [f"cell {number} reads {name}" for name in sorted((read - bound) & from_deep)]
            from_deep -= bound
    return leaks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_main_path_never_needs_a_deep_dive(path):
    """A learner may skip every section marked deep dive: no later main-path cell uses what one defined."""
    leaks = deep_dive_leaks(json.loads(path.read_text(encoding="utf-8"))["cells"])
    assert not leaks, f"{path.name}: the main path uses a deep dive's names: {leaks}"


def test_a_main_path_that_needs_a_deep_dive_is_caught():
    md = lambda s: {"cell_type": "markdown", "source": s}  # noqa: E731
    code = lambda s: {"cell_type": "code", "source": s}  # noqa: E731
    cells = [md("## 1. Main"), code("a = 1"), md("## 2. Deep dive (skip on first read): x"), code("b = a + 1"),
             md("## 3. Main again"), code("print(a)"), code("c = b * 2")]
    assert deep_dive_leaks(cells) == ["cell 6 reads b"]
