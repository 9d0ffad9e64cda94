"""make site: the course as a static HTML site, built offline from the committed notebooks (never re-executed).

    python tools/site.py [--out build/site]

The site holds the README (its front page, with the course index), every notebook with its stored outputs and
figures, the exercises' page and every page of docs/. A link in them to a source file (qvlearn/spec.py, an
exercise, a kept my_encoder module, a test) becomes a page of its own that shows the file; a link to a folder
becomes a page listing its files. The pages are staged in a temporary folder, built by Sphinx with myst-nb
(execution off, every Sphinx warning an error) and moved to --out only when the whole build succeeded: a failed
build leaves the previous site as it was.

A link that points outside the site (a file that does not exist, a path above the repository, a document that is
not part of the site) stops the build with one line per link: the page, the line and what to do.
"""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONF = Path(__file__).resolve().parent / "site"
# What the site is made of, in the order of its table of contents (the README is the front page).
PAGES = ["README.md", "notebooks/*.ipynb", "exercises/README.md", "docs/porting.md", "docs/taps.md",
         "docs/conformance.md", "docs/glossary.md", "docs/design.md", "docs/preprocessing.md", "docs/setup.md",
         "docs/benchmarks.md", "docs/benchmark_results.md", "docs/benchmark_kernels.md"]
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".svg"}
TEXT_SUFFIXES = {".py", ".json", ".txt", ".toml", ".cfg", ".ini", ".yaml", ".yml", ".sh", ".patch", ".diff", ""}
LEXERS = {".py": "python", ".json": "json", ".toml": "toml", ".cfg": "ini", ".ini": "ini", ".yaml": "yaml",
          ".yml": "yaml", ".sh": "bash", ".patch": "diff", ".diff": "diff"}
# A markdown link or image, an HTML href/src: the target is what the site must resolve.
MAX_CODE_PAGE = 200_000  # bytes: a larger linked file (results.json) is offered as a download, not shown as a page
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)|(?:href|src)=\"([^\"]+)\"")
EXTERNAL = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|#)", re.I)


class SiteError(Exception):
    """The site cannot be built as it stands; the message says which page, which link and what to do."""


def pages(root: Path = ROOT) -> list[Path]:
    """The documents of the site, relative to the repository, in table-of-contents order."""
    found = []
    for pattern in PAGES:
        matches = sorted(root.glob(pattern))
        if not matches:
            raise SiteError(f"site: {pattern} is part of the site but does not exist: restore it or drop it "
                            f"from PAGES in {Path(__file__).name}")
        found += [p.relative_to(root) for p in matches]
    return found


def markdown_of(path: Path) -> list[tuple[int, str]]:
    """(line number, text) of each line a reader sees as prose: a notebook's markdown cells (numbered as
    'cell N, line M' through the returned line's key), or a markdown file's lines."""
    if path.suffix == ".ipynb":
        lines = []
        for number, cell in enumerate(json.loads(path.read_text(encoding="utf-8"))["cells"]):
            if cell["cell_type"] == "markdown":
                source = "".join(cell["source"])
                lines += [(number * 10_000 + i, line) for i, line in enumerate(source.splitlines(), 1)]
        return lines
    return list(enumerate(path.read_text(encoding="utf-8").splitlines(), 1))


def where(path: Path, key: int) -> str:
    if path.suffix == ".ipynb":
        return f"{path} (cell {key // 10_000}, line {key % 10_000})"
    return f"{path}:{key}"


def links(root: Path, docs: list[Path]) -> tuple[set[Path], set[Path]]:
    """Check every relative link of the site's documents. Returns the files and the folders (relative to the
    repository) the site must show besides its documents; raises SiteError naming each link that leaves it."""
    doc_set, files, folders, errors = set(docs), set(), set(), []
    for doc in docs:
        for key, line in markdown_of(root / doc):
            for match in LINK.finditer(line):
                target = (match.group(1) or match.group(2)).split("#", 1)[0]
                if not target or EXTERNAL.match(target) or target.startswith("/"):
                    if target.startswith("/"):
                        errors.append(f"{where(doc, key)}: {target} is an absolute path, which no reader of the "
                                      "site or of GitHub can open: write it relative to the page")
                    continue
                resolved = (root / doc.parent / target).resolve()
                try:
                    relative = resolved.relative_to(root)
                except ValueError:
                    errors.append(f"{where(doc, key)}: {target} points above the repository, outside the site: "
                                  "link a file inside the repository")
                    continue
                if not resolved.exists():
                    errors.append(f"{where(doc, key)}: {target} does not exist ({relative}): fix the path or "
                                  "drop the link")
                elif resolved.is_dir():
                    folders.add(relative)
                elif resolved.suffix in {".md", ".ipynb"}:
                    if relative not in doc_set:
                        errors.append(f"{where(doc, key)}: {target} is a document outside the site: add it to "
                                      f"PAGES in tools/{Path(__file__).name} or link something in the site")
                elif resolved.suffix.lower() in IMAGE_SUFFIXES:
                    pass  # Sphinx copies images next to the page
                elif resolved.suffix.lower() in TEXT_SUFFIXES or resolved.name == "Makefile":
                    files.add(relative)
                else:
                    errors.append(f"{where(doc, key)}: {target} is neither a page, an image nor a text file the "
                                  "site can show: link the folder that holds it or drop the link")
    if errors:
        raise SiteError("site: these links point outside the site:\n  " + "\n  ".join(errors))
    return files, folders


def code_page(root: Path, relative: Path) -> str:
    """A page that shows one source file, with its path as the title."""
    lexer = LEXERS.get(relative.suffix, "make" if relative.name == "Makefile" else "text")
    text = (root / relative).read_text(encoding="utf-8")
    fence = "`" * max(4, max((len(m) for m in re.findall(r"`+", text)), default=0) + 1)
    return f"---\norphan: true\n---\n# {relative}\n\n{fence}{lexer}\n{text}\n{fence}\n"


def folder_page(root: Path, relative: Path) -> str:
    """A page that lists a folder's files, each a link to its page."""
    entries = sorted(p for p in (root / relative).iterdir() if p.is_file() and not p.name.startswith(".")
                     and p.suffix != ".pyc")
    lines = ["---", "orphan: true", "---", f"# {relative}/", ""]
    lines += [f"- [{p.name}]({p.name})" for p in entries]
    return "\n".join(lines) + "\n"


def stage(root: Path, into: Path) -> list[Path]:
    """Copy the site's documents and what they link to into `into`; returns the documents' relative paths."""
    docs = pages(root)
    files, folders = links(root, docs)
    for folder in folders:  # a folder's listing links its files: they get pages too
        files |= {(folder / p.name) for p in (root / folder).iterdir() if p.is_file()
                  and not p.name.startswith(".") and p.suffix != ".pyc"}
    for doc in docs:
        (into / doc).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / doc, into / doc)
    shutil.copytree(root / "images", into / "images")
    for relative in sorted(files):
        if (root / relative).stat().st_size > MAX_CODE_PAGE:  # data, not code: the raw file, as a download
            (into / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / relative, into / relative)
            continue
        page = into / (str(relative) + ".md")  # docname "qvlearn/spec.py": a link to qvlearn/spec.py finds it
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(code_page(root, relative), encoding="utf-8")
    for folder in sorted(folders):
        page = into / folder / "index.md"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(folder_page(root, folder), encoding="utf-8")
    # A link to a folder ("notebooks/my_encoder/") is a link to its listing page in the staged copies.
    for doc in docs:
        path = into / doc
        if doc.suffix == ".ipynb":
            notebook = json.loads(path.read_text(encoding="utf-8"))
            for cell in notebook["cells"]:
                if cell["cell_type"] == "markdown":
                    cell["source"] = _folder_links("".join(cell["source"]), root, doc)
                # JupyterLab's folds (a solution's output, say) are myst-nb's hide-* tags on the site.
                folds = cell.get("metadata", {}).get("jupyter", {})
                tags = cell.setdefault("metadata", {}).setdefault("tags", [])
                tags += [tag for key, tag in (("outputs_hidden", "hide-output"), ("source_hidden", "hide-input"))
                         if folds.get(key) and tag not in tags]
            path.write_text(json.dumps(notebook), encoding="utf-8")
        else:
            path.write_text(_folder_links(path.read_text(encoding="utf-8"), root, doc), encoding="utf-8")
    # The table of contents: every document and code page, hidden on the front page (the README reads as itself).
    toc = [str(d.with_suffix("")) for d in docs[1:]]
    with open(into / docs[0], "a", encoding="utf-8") as readme:
        readme.write("\n\n```{toctree}\n:hidden:\n:maxdepth: 1\n\n" + "\n".join(toc) + "\n```\n")
    return docs


def _folder_links(text: str, root: Path, doc: Path) -> str:
    def swap(match: re.Match) -> str:
        target = match.group(1)
        if target and not EXTERNAL.match(target) and (root / doc.parent / target.split("#")[0]).is_dir():
            return match.group(0).replace(target, target.rstrip("/") + "/index.md")
        return match.group(0)
    return LINK.sub(swap, text)


def _short(line: str, limit: int = 400) -> str:
    return line if len(line) <= limit else line[:limit] + f" ... ({len(line) - limit} more characters)"


def build(out: Path, root: Path = ROOT) -> Path:
    """Stage, build with Sphinx (warnings are errors), then replace `out` with the new site in one move."""
    from sphinx.application import Sphinx
    from sphinx.util.console import nocolor

    nocolor()
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="site-", dir=out.parent) as tmp:
        tmp = Path(tmp)
        src, html = tmp / "src", tmp / "html"
        src.mkdir()
        docs = stage(root, src)
        warnings = io.StringIO()
        app = Sphinx(str(src), str(CONF), str(html), str(tmp / "doctrees"), "html", status=None,
                     warning=warnings, freshenv=True, keep_going=True, confoverrides={"root_doc": "README"})
        app.build()
        problems = [line for line in warnings.getvalue().splitlines() if "WARNING" in line or "ERROR" in line]
        if problems or app.statuscode:
            shown = "\n  ".join(_short(line.replace(str(src) + "/", "")) for line in problems) or "(no message)"
            raise SiteError(f"site: Sphinx could not build the site cleanly ({len(problems)} problems); "
                            f"nothing was written to {out}:\n  {shown}")
        (html / "index.html").write_text(
            '<!DOCTYPE html>\n<meta charset="utf-8">\n<title>qvlearn</title>\n'
            '<meta http-equiv="refresh" content="0; url=README.html">\n'
            '<p>The course starts at <a href="README.html">README.html</a>.</p>\n', encoding="utf-8")
        (html / ".site.json").write_text(json.dumps({"pages": [str(d) for d in docs]}), encoding="utf-8")
        old = tmp / "old"
        if out.exists():
            out.rename(old)
        html.rename(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "site", help="where the site goes")
    args = parser.parse_args(argv)
    try:
        out = build(args.out, ROOT)
    except SiteError as error:
        print(error, file=sys.stderr)
        return 1
    print(f"site: {out}/index.html (open it in a browser, or: python -m http.server -d {out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
