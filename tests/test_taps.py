"""Golden taps and the compare tool, used the way a porter would."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file

import qvlearn
from qvlearn.tools.taps import TapError, compare_taps, load_taps

PY = [sys.executable, "-m", "qvlearn"]


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "photo.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (150, 230, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-qwen2.5-vl"])
def test_qvlearn_taps_agree_with_reference_taps(tmp_path, checkpoint, image, preset):
    model = str(checkpoint(preset))
    ours, ref = tmp_path / "ours.safetensors", tmp_path / "ref.safetensors"
    for out, extra in ((ours, []), (ref, ["--reference"])):
        proc = subprocess.run(PY + ["taps", str(image), "--model", model, "--out", str(out), *extra],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    stages, meta = load_taps(ours)
    assert meta["source"] == "qvlearn" and meta["qvlearn_taps_format"] == "1" and '"model_type"' in meta["config"]
    depth = qvlearn.read_config(model).depth
    expected = {"pixel_values", "grid_thw", "patch_embeds", "position_ids", "cos", "sin", "cu_seqlens",
                "last_hidden_state", "merger.ln_q", "merger", "embeddings"} | {f"blocks.{i}" for i in range(depth)}
    if preset == "tiny-qwen2.5-vl":
        expected |= {"window_index", "cu_window_seqlens"} | {f"blocks.{i}.natural" for i in range(depth)}
    assert set(stages) == expected
    assert load_taps(ref)[1]["source"] == "transformers"
    proc = subprocess.run(PY + ["compare", str(ours), str(ref), "--rtol", "1e-5"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"all {len(expected)} stages within tolerance" in proc.stdout
    assert "cosine" in proc.stdout and "max |diff|" in proc.stdout


def test_natural_order_blocks_match_a_natural_order_port(tmp_path, checkpoint, mixed_batch):
    """blocks.{i}.natural is block i in token order: un-permuting it again gives the window-ordered tap."""
    from qvlearn.engine.window_index import patch_permutation
    from qvlearn.tools.taps import add_natural_order

    enc = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl"))
    stages = add_natural_order(enc.trace(*mixed_batch, to_numpy=True))
    rows = patch_permutation(stages["window_index"])
    np.testing.assert_array_equal(stages["blocks.2.natural"][rows], stages["blocks.2"])


def test_compare_names_the_first_divergent_stage(tmp_path, checkpoint, image):
    golden = tmp_path / "golden.safetensors"
    subprocess.run(PY + ["taps", str(image), "--model", str(checkpoint("tiny-qwen2.5-vl")), "--out", str(golden)],
                   check=True, capture_output=True)
    stages = load_file(golden)
    # a "port" that wrote only some stages, with a bug from block 2 on
    port = {k: stages[k] for k in ("patch_embeds", "window_index", "blocks.0", "blocks.1", "blocks.2", "blocks.3",
                                   "embeddings")}
    port["blocks.2"] = port["blocks.2"] * 1.01
    port["blocks.3"] = port["blocks.3"] + 1.0
    port["embeddings"] = port["embeddings"][::-1].copy()
    mine = tmp_path / "port.safetensors"
    save_file(port, str(mine), metadata={"qvlearn_taps_format": "1"})
    proc = subprocess.run(PY + ["compare", str(mine), str(golden)], capture_output=True, text=True)
    assert proc.returncode == 1
    assert "first stage beyond tolerance: blocks.2 (limits: rel <= 1e-05 and scale error <= 1e-06)" in proc.stdout
    table = proc.stdout.split("first stage")[0].splitlines()[1:]
    lines = {line.split()[0]: line for line in table}
    assert set(lines) == set(port)
    assert lines["blocks.1"].endswith("ok") and "BEYOND" in lines["embeddings"]
    assert "rows in another order" in lines["embeddings"]          # reversed rows: an order bug, not arithmetic
    assert "not compared, only in golden.safetensors: pixel_values, grid_thw, position_ids" in proc.stdout


def test_tap_file_errors(tmp_path, checkpoint, image):
    golden = tmp_path / "golden.safetensors"
    subprocess.run(PY + ["taps", str(image), "--model", str(checkpoint("tiny-qwen2-vl")), "--out", str(golden)],
                   check=True, capture_output=True)
    stages = load_file(golden)
    other = tmp_path / "other.safetensors"
    save_file({"embeddings": stages["embeddings"]}, str(other), metadata={"qvlearn_taps_format": "2"})
    with pytest.raises(TapError, match="not a qvlearn tap file of format 1"):
        load_taps(other)
    proc = subprocess.run(PY + ["compare", str(other), str(golden)], capture_output=True, text=True)
    assert proc.returncode == 2 and "error: " in proc.stderr and "format 1" in proc.stderr
    a, _ = load_taps(golden)
    with pytest.raises(TapError, match=r"--stage 'window_index' matches no stage of either tap file\. \(The first"):
        compare_taps(a, a, stages=["window_index"])
    with pytest.raises(TapError, match="stage 'cos' .* is missing from the first tap file"):
        compare_taps({k: v for k, v in a.items() if k != "cos"}, a, stages=["c*"])
    b = dict(a, patch_embeds=a["patch_embeds"][:-4])
    rows = compare_taps(b, a)
    bad = [r for r in rows if not r.ok]
    assert [r.name for r in bad] == ["patch_embeds"] and "shape" in bad[0].note
    with pytest.raises(TapError, match="share no stage of the encoder"):
        compare_taps({"pixel_values": a["pixel_values"], "grid_thw": a["grid_thw"]}, a)
    with pytest.raises(TapError, match="not tap stages: 'x'"):
        compare_taps({"x": np.zeros(1)}, a)
