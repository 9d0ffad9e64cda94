"""The notebooks' model: a downloaded snapshot is used only where its family is the one a cell asks for."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import qvlearn
from qvlearn.tools import cache, course

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CALL = re.compile(r"model_dir\(([^)]*)\)")


def _requests() -> list[tuple[str, str, bool]]:
    """Every model_dir(...) call of the notebooks: (notebook, preset, has overrides)."""
    found = []
    for path in NOTEBOOKS:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            for args in CALL.findall("".join(cell["source"])):
                preset = re.match(r'\s*"([^"]+)"', args)
                found.append((path.name, preset.group(1) if preset else "qwen2.5-vl-7b", "=" in args))
    return found


def test_the_notebooks_ask_for_models():
    assert len(_requests()) >= 10


@pytest.mark.parametrize("real_family", ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"])
def test_every_request_gets_the_family_it_names(monkeypatch, checkpoint, real_family):
    tiny = {"qwen2_vl": "tiny-qwen2-vl", "qwen2_5_vl": "tiny-qwen2.5-vl", "qwen3_vl": "tiny-qwen3-vl"}
    real = checkpoint(tiny[real_family])
    monkeypatch.setenv(course.MODEL_ENV, str(real))
    made = []
    monkeypatch.setattr(cache, "default_model", lambda preset, **kw: made.append(preset) or Path(f"/random/{preset}"))
    for notebook, preset, overrides in _requests():
        wanted = qvlearn.preset_config(preset).family
        with pytest.warns(UserWarning, match="not a") if (wanted != real_family and not overrides
                                                          and not preset.startswith("tiny-")) else _nothing():
            got = course.model_dir(preset, **({"depth": 1} if overrides else {}))
        if got == real:
            assert wanted == real_family and not preset.startswith("tiny-") and not overrides, (notebook, preset)
        else:
            assert got == Path(f"/random/{preset}"), (notebook, preset)
            assert wanted != real_family or preset.startswith("tiny-") or overrides, (notebook, preset)
        if not overrides:
            assert course.uses_real_weights(preset) == (got == real)


def test_one_variable_per_family(monkeypatch, checkpoint):
    qwen2, qwen25 = checkpoint("tiny-qwen2-vl"), checkpoint("tiny-qwen2.5-vl")
    monkeypatch.setenv("QVLEARN_MODEL_QWEN2_VL", str(qwen2))
    monkeypatch.setenv("QVLEARN_MODEL_QWEN2_5_VL", str(qwen25))
    assert course.model_dir("qwen2-vl-2b") == qwen2 and course.model_dir("qwen2.5-vl-7b") == qwen25
    monkeypatch.setenv("QVLEARN_MODEL_QWEN2_VL", str(qwen25))
    with pytest.raises(ValueError, match="QVLEARN_MODEL_QWEN2_VL is a qwen2_5_vl snapshot"):
        course.model_dir("qwen2-vl-2b")


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False
