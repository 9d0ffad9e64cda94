"""The command line, run as a user runs it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

import qvlearn
from qvlearn.tools import cli


def _images(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(150, 230), (60, 90)]):
        paths.append(tmp_path / f"img{i}.png")
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def test_encode_with_model(tmp_path, checkpoint):
    images = _images(tmp_path)
    out = tmp_path / "emb.safetensors"
    proc = subprocess.run([sys.executable, "-m", "qvlearn", "encode", *map(str, images), "--model",
                           str(checkpoint("tiny-qwen2.5-vl")), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "grid_thw (1, 10, 16) -> 40 tokens (140x224 px)" in proc.stdout
    assert "wrote 46 tokens x 96 (float32)" in proc.stdout
    saved = load_file(out)
    expected = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl"))(*qvlearn.preprocess(images=images))
    np.testing.assert_array_equal(saved["embeddings"], expected)
    assert saved["grid_thw"].tolist() == [[1, 10, 16], [1, 4, 6]]


def test_encode_without_model_uses_the_cached_default(tmp_path, monkeypatch, capsys):
    images = _images(tmp_path)
    monkeypatch.setenv("QVLEARN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cli, "DEFAULT_PRESET", "tiny-qwen2.5-vl")  # the 7B shape is 1.35 GB; same code path
    assert cli.main(["encode", str(images[0]), "--out", str(tmp_path / "a.npy")]) == 0
    err = capsys.readouterr().err
    assert "generating seeded random weights" in err and "no --model given" in err
    assert cli.main(["encode", str(images[0]), "--out", str(tmp_path / "b.npy")]) == 0
    assert "generating" not in capsys.readouterr().err  # cached
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    assert (tmp_path / "cache" / "random-tiny-qwen2.5-vl-seed0" / "config.json").exists()


def test_encode_errors_are_reported_not_raised(tmp_path, checkpoint, capsys):
    code = cli.main(["encode", str(tmp_path / "missing.png"), "--model", str(checkpoint("tiny-qwen2-vl")),
                     "--out", str(tmp_path / "x.npy")])
    assert code == 2
    assert "error: image file not found" in capsys.readouterr().err
