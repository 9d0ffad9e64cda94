"""The benchmark runs end to end on the tiny presets and reports every column (no timing is asserted)."""

from __future__ import annotations

import subprocess
import sys

import qvlearn
from qvlearn.bench import forward_flops

COLUMNS = ["tower", "image (px)", "patches", "qvlearn s", "transformers s", "ratio", "GFLOP", "qvlearn GFLOP/s",
           "share of matmul peak", "qvlearn peak RSS GiB", "transformers peak RSS GiB", "weights f32 GiB"]


def test_bench_tiny_prints_every_column(tmp_path):
    report = tmp_path / "bench.md"
    proc = subprocess.run([sys.executable, "-m", "qvlearn.bench", "--tiny", "--report", str(report), "--plot",
                           str(tmp_path / "bench.png")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    text = report.read_text()
    header = next(line for line in text.splitlines() if line.startswith("| tower"))
    assert [c.strip() for c in header.strip("|").split("|")] == COLUMNS
    rows = [line for line in text.splitlines() if line.startswith("| tiny-")]
    assert len(rows) == 2 and not any("failed" in r for r in rows)
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert len(cells) == len(COLUMNS) and all(cells)
        float(cells[3]), float(cells[4]), float(cells[5])
    assert "GFLOP/s" in text and "Machine:" in text and "GPU" in text
    assert (tmp_path / "bench.png").stat().st_size > 1000


def test_flop_count_by_hand():
    cfg = qvlearn.preset_config("qwen2-vl-2b")
    n, D, I = 2352, 1280, 5120
    by_hand = (2 * n * 1176 * D + 32 * (2 * n * D * 4 * D + 2 * 2 * n * D * I + 4 * n * n * D)
               + 2 * (n // 4) * 4 * D * (4 * D + 1536))
    assert forward_flops(cfg, [(1, 42, 56)]) == by_hand
