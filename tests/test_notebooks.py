"""The notebooks as committed: nbval only compares cells that were executed, so a stripped, half-run
or out-of-order notebook would pass it silently. These checks make that a failure."""

from __future__ import annotations

import json
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
