"""The learner's track: its notebooks build an encoder of the learner's own (notebooks/my_encoder/, written by
qvlearn.tools.course.keep) and never reach into the fast engine; each kept module is imported only after the
notebook that keeps it."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
MY_ENCODER = ROOT / "notebooks" / "my_encoder"
TRACK = re.compile(r"^Track: \*\*(learner|porter)\*\*", re.M)

# what a learner notebook's code must not touch: the engine and its private machinery
FORBIDDEN = re.compile(r"qvlearn\.engine|\bKERNELS\b|\bSegmentPlan\b|\bchunk_bytes\b|\bvision_block\b|"
                       r"\bmax_free\b|\bsegment_attention\(.*plan|qvlearn\.tools\.bugs|"
                       r"from qvlearn\.tools import [^\n]*\bbugs\b|"
                       r"from qvlearn(?:\.[\w.]+)? import [^\n]*\b_\w+|qvlearn\.\w+(?:\.\w+)*\._\w+")


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def track(path: Path) -> str:
    found = TRACK.search("".join(_cells(path)[0]["source"]))
    assert found, f"{path.name}: the header names no track ('Track: **learner**' or '**porter**')"
    return found.group(1)


def learner_notebooks() -> list[Path]:
    return [p for p in NOTEBOOKS if track(p) == "learner"]


def engine_uses(source: str) -> list[str]:
    return [line.strip() for line in source.splitlines() if FORBIDDEN.search(line)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_every_notebook_names_its_track(path):
    track(path)


def test_both_tracks_exist_and_the_readme_names_them():
    tracks = {p.name: track(p) for p in NOTEBOOKS}
    assert {"learner", "porter"} <= set(tracks.values())
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name, kind in tracks.items():
        row = next((line for line in readme.splitlines() if line.startswith(f"| [{name}](notebooks/{name})")), "")
        assert kind in row.lower(), f"README's course table does not name {name}'s track ({kind})"


@pytest.mark.parametrize("path", learner_notebooks(), ids=lambda p: p.name)
def test_learner_notebooks_never_reach_into_the_engine(path):
    bad = [use for cell in _cells(path) if cell["cell_type"] == "code" for use in engine_uses("".join(cell["source"]))]
    assert not bad, f"{path.name} uses the fast engine or a private name: {bad}"


def test_the_scan_catches_what_it_is_about():
    for line in ["from qvlearn.engine.kernels import KERNELS", "out = vision_block(K, x, w)",
                 "plan = SegmentPlan.build(cu, np.asarray)", "from qvlearn.config import _check_types",
                 "qvlearn.encoder._helper(x)", "from qvlearn.tools import bugs"]:
        assert engine_uses(line), line
    for line in ["from my_encoder.attention import block", "encoder = qvlearn.load_encoder(path)",
                 "out = segment_attention(q, k, v, cu, scale)", "stages = encoder.trace(pv, grid)"]:
        assert not engine_uses(line), line


def _kept() -> dict[str, tuple[int, set[str]]]:
    """module -> (the notebook number that keeps it, the names it keeps), from the notebooks' keep(...) calls."""
    kept = {}
    for path in NOTEBOOKS:
        for cell in _cells(path):
            source = "".join(cell["source"])
            if cell["cell_type"] != "code" or "keep(" not in source:
                continue
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "keep":
                    module = next(k.value.value for k in node.keywords if k.arg == "module")
                    assert module not in kept, f"{module} is kept by two notebooks"
                    kept[module] = (int(path.name[:2]), {a.id for a in node.args})
    return kept


def test_each_kept_module_is_used_only_after_the_notebook_that_keeps_it():
    kept = _kept()
    assert {"patch_embed", "rope", "windows", "layers", "attention", "merger", "encoder"} <= set(kept)
    for path in NOTEBOOKS:
        number = int(path.name[:2])
        for cell in _cells(path):
            for module, names in re.findall(r"from my_encoder\.(\w+) import ([\w, ]+)", "".join(cell["source"])):
                assert module in kept, f"{path.name} imports my_encoder.{module}, which no notebook keeps"
                keeper, provided = kept[module]
                assert keeper <= number, f"{path.name} imports my_encoder.{module} before notebook {keeper} keeps it"
                missing = {n.strip() for n in names.split(",")} - provided
                assert not missing, f"{path.name} imports {missing} from my_encoder.{module}, which it does not keep"


def test_the_committed_learner_encoder_is_what_the_notebooks_keep():
    """notebooks/my_encoder/ is committed (a later notebook runs without the earlier ones); it holds exactly the
    kept functions, so running the notebooks (nbval does) leaves it unchanged."""
    kept = _kept()
    assert sorted(p.stem for p in MY_ENCODER.glob("*.py") if p.stem != "__init__") == sorted(kept)
    for module, (_, names) in kept.items():
        tree = ast.parse((MY_ENCODER / f"{module}.py").read_text(encoding="utf-8"))
        assert {n.name for n in tree.body if isinstance(n, ast.FunctionDef)} == names, module


def test_the_learner_encoder_stands_on_numpy_and_the_public_api():
    for path in MY_ENCODER.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
                for name in names:
                    assert name.split(".")[0] in {"numpy", "math", "scipy", "my_encoder", "qvlearn"}, (path, name)
                    assert not name.startswith("qvlearn."), f"{path.name}: only the top-level qvlearn API, not {name}"


def test_keep_writes_the_source_and_a_later_import_sees_an_edit(tmp_path):
    """What a learner does: define, keep, import in a later notebook; edit, keep again, and the import changes."""
    script = tmp_path / "session.py"
    script.write_text("""
import numpy as np
from qvlearn.tools.course import keep
import linecache

def define(src):
    name = f"<cell {len(linecache.cache)}>"
    linecache.cache[name] = (len(src), None, src.splitlines(True), name)
    exec(compile(src, name, "exec"), globals())

define("def double(x):\\n    return np.asarray(x) * 2\\n")
keep(double, module="tiny")
from my_encoder.tiny import double as kept
assert kept(3) == 6
define("def double(x):\\n    return np.asarray(x) * 2 + 1\\n")
keep(double, module="tiny")
from my_encoder.tiny import double as kept
assert kept(3) == 7, kept(3)
define("def needs_math(x):\\n    return math.pi * x\\n")
try:
    keep(needs_math, module="broken")
except NameError as err:
    assert "math" in str(err) and "imports=" in str(err), err
else:
    raise AssertionError("keep accepted a function whose module lacks math")
import os
assert not os.path.exists("my_encoder/broken.py")
define("def double(x):\\n    return math.pi * x\\n")                 # a broken edit of a kept module
try:
    keep(double, module="tiny")
except NameError:
    pass
from my_encoder.tiny import double as kept
assert kept(3) == 7, "a refused keep replaced the earlier version"
print("ok")
""")
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stdout + done.stderr
    assert "return np.asarray(x) * 2 + 1" in (tmp_path / "my_encoder" / "tiny.py").read_text()  # still the good one
