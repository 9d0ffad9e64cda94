"""docs/porting.md is generated from the code; it must say what the code does."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_porting_reference_matches_the_code():
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "porting_reference.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_porting_reference_has_the_released_parameter_counts():
    text = (ROOT / "docs" / "porting.md").read_text(encoding="utf-8")
    assert "391 tensors, 665,271,296 parameters." in text      # Qwen2-VL-2B tower (spec §4.1)
    assert "390 tensors, 676,550,144 parameters." in text      # Qwen2.5-VL-7B tower (spec §4.2)
