"""Execute notebooks top to bottom, each in one fresh kernel, and save them with their outputs.

    python tools/regenerate_notebooks.py notebooks/*.ipynb      (what `make notebooks` runs)

It is also the only run that writes the figures into ``images/`` (``qvlearn.tools.course.save_figure``);
tests and JupyterLab sessions write them to a temporary folder. This is the only way notebooks are committed: nbval
compares the stored outputs, and a test checks that every code cell was executed in order.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient


def regenerate(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}},
                   record_timing=False).execute()
    nbformat.write(nb, path)
    return time.perf_counter() - start


def main(paths) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("PYTHONHASHSEED", "0")
    os.environ["QVLEARN_WRITE_FIGURES"] = "1"  # the one run that writes figures into images/
    for p in paths:
        seconds = regenerate(Path(p))
        print(f"{p}: executed in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
