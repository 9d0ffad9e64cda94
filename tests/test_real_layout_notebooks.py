"""The tour and notebook 8 on a snapshot written by transformers' own save_pretrained (the layout of a real download),
handed to them through QVLEARN_MODEL as a learner with real weights would. Slow (both notebooks run end to end):
`make test-slow`."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def transformers_snapshot(tmp_path_factory):
    import torch
    import transformers as T

    root = tmp_path_factory.mktemp("hf-qwen2.5-vl")   # a 256-wide one-layer LLM, the 7B vision tower
    vision = dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=256,
                  fullatt_block_indexes=[7, 15, 23, 31], window_size=112, tokens_per_second=2)   # the 7B tower
    text = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=2, vocab_size=151936,
                rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [4, 6, 6]})
    torch.manual_seed(0)
    model = T.Qwen2_5_VLForConditionalGeneration(T.Qwen2_5_VLConfig(vision_config=vision, text_config=text))
    model.to(torch.bfloat16).save_pretrained(root)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("name", ["00_tour.ipynb", "08_whole_encoder.ipynb"])
def test_the_notebook_runs_on_a_transformers_snapshot(transformers_snapshot, name, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("QVLEARN_MODEL", str(transformers_snapshot))
    monkeypatch.delenv("QVLEARN_WRITE_FIGURES", raising=False)
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    first = "".join(o.get("text", "") for o in nb.cells[1].get("outputs", []))
    assert "model $QVLEARN_MODEL" in first, first     # the notebook ran on the snapshot, not on random weights
