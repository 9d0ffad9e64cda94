"""The course site (tools/site.py): a link that leaves the site is a clear error, a failed build leaves the last
site in place, and the prose links what it names. `make test-site` builds the real site and opens every page in
headless chromium (tools/site_check.py); these tests hold the rules that build relies on."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"qvlearn_tools_{name}", ROOT / "tools" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


site = _load("site")


def _repo(tmp_path: Path, readme: str, notebook_markdown: str = "Nothing linked.") -> Path:
    root = tmp_path / "repo"
    (root / "notebooks").mkdir(parents=True)
    (root / "qvlearn").mkdir()
    (root / "qvlearn" / "spec.py").write_text("x = 1\n")
    for pattern in site.PAGES:  # every page the site is made of, so that only the links under test can fail
        if "*" not in pattern:
            (root / pattern).parent.mkdir(parents=True, exist_ok=True)
            (root / pattern).write_text(f"# {pattern}\n")
    (root / "images").mkdir()
    (root / "README.md").write_text(readme)
    cells = [{"cell_type": "markdown", "metadata": {}, "source": notebook_markdown}]
    (root / "notebooks" / "00_tour.ipynb").write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4,
                                                                  "nbformat_minor": 5}))
    return root


def test_links_that_leave_the_site_are_each_named_with_the_page_the_line_and_what_to_do(tmp_path):
    root = _repo(tmp_path, "# T\n\n[ok](qvlearn/spec.py) [tour](notebooks/00_tour.ipynb)\n"
                           "[gone](docs/missing.md)\n[up](../outside.md)\n[abs](/etc/passwd)\n",
                 notebook_markdown="Line one.\n[not in the site](../LICENSE.md)")
    (root / "LICENSE.md").write_text("licence")
    docs = [Path("README.md"), Path("notebooks/00_tour.ipynb")]
    with pytest.raises(site.SiteError) as error:
        site.links(root, docs)
    message = str(error.value)
    assert "README.md:4: docs/missing.md does not exist" in message
    assert "README.md:5: ../outside.md points above the repository" in message
    assert "README.md:6: /etc/passwd is an absolute path" in message
    assert "notebooks/00_tour.ipynb (cell 0, line 2): ../LICENSE.md is a document outside the site" in message
    assert "spec.py" not in message and "00_tour.ipynb)" not in message.split("\n")[0]


def test_linked_source_files_and_folders_become_pages_of_the_site(tmp_path):
    root = _repo(tmp_path, "# T\n\n[spec](qvlearn/spec.py#L1) and [the folder](qvlearn/) and "
                           "<a href=\"https://example.org\">web</a>\n")
    files, folders = site.links(root, [Path("README.md")])
    assert files == {Path("qvlearn/spec.py")} and folders == {Path("qvlearn")}
    page = site.code_page(root, Path("qvlearn/spec.py"))
    assert page.startswith("---\norphan: true\n---\n# qvlearn/spec.py\n") and "````python\nx = 1\n" in page
    assert "- [spec.py](spec.py)" in site.folder_page(root, Path("qvlearn"))


def test_a_failed_build_leaves_the_previous_site_as_it_was(tmp_path):
    root = _repo(tmp_path, "[gone](nowhere.py)\n")
    out = tmp_path / "site"
    out.mkdir()
    (out / "index.html").write_text("the previous site")
    with pytest.raises(site.SiteError, match="nowhere.py does not exist"):
        site.build(out, root)
    assert (out / "index.html").read_text() == "the previous site"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["repo", "site"]  # no staging folder left behind


def test_the_command_line_reports_a_bad_site_in_one_message_and_exits_1(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(site, "ROOT", _repo(tmp_path, "[gone](nowhere.py)\n"))
    assert site.main(["--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "these links point outside the site" in err and "Traceback" not in err


# --- the prose links what it names ------------------------------------------------------------------------------

FILE = re.compile(r"(?<![\[\w])`([\w./-]+\.(?:md|py|ipynb|json|png|jpg|txt|toml|cfg))`(?!\]|\()")
NOTEBOOK = re.compile(r"(?<![\[\w/])\b[Nn]otebook (\d{1,2})\b(?![\]\d–-])")


def _prose(doc: Path):
    """(where, line) of a page's prose: outside code fences, headings and inline code, link texts stripped."""
    fence = False
    for key, line in site.markdown_of(ROOT / doc):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence and not line.lstrip().startswith("#"):
            yield site.where(doc, key), line


@pytest.mark.parametrize("doc", site.pages(ROOT), ids=str)
def test_a_file_the_prose_names_is_a_link_to_it(doc):
    """The learner never has to find a file by hand: a repository file named in backticks is a link."""
    missing = []
    for where, line in _prose(doc):
        for match in FILE.finditer(line):
            name = match.group(1)
            if (ROOT / name).is_file() or (ROOT / doc.parent / name).is_file():
                missing.append(f"{where}: `{name}`")
    assert not missing, "name these files as links, [`path`](relative/path):\n" + "\n".join(missing)


@pytest.mark.parametrize("doc", site.pages(ROOT), ids=str)
def test_a_notebook_the_prose_names_is_a_link_to_it(doc):
    numbers = {int(p.name[:2]) for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")}
    missing = []
    for where, line in _prose(doc):
        outside_code = "".join(line.split("`")[::2])
        outside_links = re.sub(r"\[[^\]]*\]\([^)]*\)", "", outside_code)
        for match in NOTEBOOK.finditer(outside_links):
            own = doc.suffix == ".ipynb" and doc.name.startswith(f"{int(match.group(1)):02d}_")
            if int(match.group(1)) in numbers and not own:
                missing.append(f"{where}: {match.group(0)}")
    assert not missing, "link these notebooks, [notebook N](NN_name.ipynb):\n" + "\n".join(missing)


EXERCISE = re.compile(r"(?<![\[\w/])\b[Ee]xercises? (\d\d)(?:\.\d)?\b(?![\]\d–-])")


@pytest.mark.parametrize("doc", site.pages(ROOT), ids=str)
def test_an_exercise_the_prose_names_is_a_link_to_its_file(doc):
    numbers = {int(p.name[2:4]) for p in (ROOT / "exercises").glob("ex[0-9][0-9]_*.py")}
    missing = []
    for where, line in _prose(doc):
        outside = re.sub(r"\[[^\]]*\]\([^)]*\)", "", "".join(line.split("`")[::2]))
        missing += [f"{where}: {m.group(0)}" for m in EXERCISE.finditer(outside) if int(m.group(1)) in numbers]
    assert not missing, "link these exercises, [exercise NN.M](../exercises/exNN_name.py):\n" + "\n".join(missing)
