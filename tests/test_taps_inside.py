"""Taps inside the blocks, and a compare that cannot be fooled (issue: porters' toolkit 2)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import load_file, save_file

import qvlearn
from qvlearn.engine.kernels import KERNELS
from qvlearn.tools.reference import reference_tower, reference_trace
from qvlearn.tools.taps import (
    TapError,
    compare_taps,
    default_stages,
    inverse_permutation,
    patch_permutation,
    select_stages,
    stage_names,
)

PY = [sys.executable, "-m", "qvlearn"]
TOL = 1e-5


@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-qwen2.5-vl"])
def test_every_stage_inside_the_blocks_matches_transformers(preset, checkpoint, mixed_batch):
    """Every stage of every block, qvlearn against transformers' hooked modules, same names."""
    path = checkpoint(preset)
    encoder = qvlearn.load_encoder(path)
    ours = encoder.trace(*mixed_batch, to_numpy=True, stages=["*"])
    ref = reference_trace(reference_tower(path), *mixed_batch, stages=["*"])
    assert sorted(ours) == sorted(ref) == sorted(stage_names(encoder.config))
    inner = encoder.config.kind.block_stages
    assert all(f"blocks.{i}.{n}" in ours for i in range(encoder.config.depth) for n in inner)
    assert ours["blocks.0.attn.q"].shape == (mixed_batch[0].shape[0], encoder.config.num_heads, encoder.config.head_dim)
    rows = compare_taps(ours, ref, rtol=TOL)
    assert all(r.ok for r in rows), [(r.name, r.rel, r.scale) for r in rows if not r.ok]


@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-qwen2.5-vl", "tiny-qwen3-vl", "tiny-qwen3.5"])
def test_the_tapped_block_is_the_block(preset, checkpoint, mixed_batch_for):
    """Running a block with its inner taps (finish on all rows at once) gives the block's own result."""
    encoder = qvlearn.load_encoder(checkpoint(preset))
    batch = mixed_batch_for(encoder.config)
    plain = encoder.trace(*batch, to_numpy=True, stages=["blocks.*", "embeddings"])
    tapped = encoder.trace(*batch, to_numpy=True, stages=["*"])
    for name in plain:
        scale = np.abs(plain[name]).max()
        np.testing.assert_allclose(tapped[name], plain[name], rtol=0, atol=1e-6 * scale, err_msg=name)


def test_stage_selection(checkpoint, mixed_batch):
    encoder = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl"))
    config = encoder.config
    assert select_stages(config, ["blocks.1.*"])[:2] == ["blocks.1.norm1", "blocks.1.attn.q"]
    assert "blocks.1.natural" in select_stages(config, ["blocks.1.*"])
    assert "blocks.0.norm1" not in default_stages(config) and "blocks.0.natural" in default_stages(config)
    got = encoder.trace(*mixed_batch, to_numpy=True, stages=["blocks.*.attn.q", "embeddings"])
    assert sorted(got) == ["blocks.0.attn.q", "blocks.1.attn.q", "blocks.2.attn.q", "blocks.3.attn.q", "embeddings"]
    # natural order is the window order undone
    both = encoder.trace(*mixed_batch, to_numpy=True, stages=["blocks.0", "blocks.0.natural", "window_index"])
    rows = inverse_permutation(patch_permutation(both["window_index"], 2))
    np.testing.assert_array_equal(both["blocks.0.natural"], both["blocks.0"][rows])
    with pytest.raises(TapError, match=r"no stage matches 'block\.0\.\*' \(did you mean blocks\.0"):
        encoder.trace(*mixed_batch, stages=["block.0.*"])
    q2 = qvlearn.load_encoder(checkpoint("tiny-qwen2-vl")).config
    with pytest.raises(TapError, match="no stage matches 'blocks.0.natural'"):
        select_stages(q2, ["blocks.0.natural"])  # Qwen2-VL has no window order
    assert "blocks.0.mlp.fc1" in stage_names(q2) and "blocks.0.mlp.gate" not in stage_names(q2)


def test_compare_catches_a_wrong_norm_eps_and_passes_a_correct_port(checkpoint, mixed_batch):
    """RMSNorm eps 1e-5 instead of 1e-6 moves every stage by ~5e-6 relative: under a max-based tolerance a
    correct float32 port also reaches (~2e-6), but it is a systematic scale error, which float32 noise is not."""
    path = checkpoint("tiny-qwen2.5-vl")
    encoder = qvlearn.load_encoder(path)
    ref = reference_trace(reference_tower(path), *mixed_batch, stages=["*"])
    correct = encoder.trace(*mixed_batch, to_numpy=True, stages=["*"])
    assert all(r.ok for r in compare_taps(correct, ref))                      # the defaults
    kernels = KERNELS.replace(rms_norm=lambda x, w, eps=1e-6: KERNELS.rms_norm(x, w, 1e-5))
    buggy = encoder.with_kernels(kernels).trace(*mixed_batch, to_numpy=True, stages=["*"])
    rows = compare_taps(buggy, ref)
    first = next(r for r in rows if not r.ok)
    assert first.name == "blocks.0.norm1" and "scale error" in first.note
    assert first.rel < 1e-4  # the old default tolerance let it through


def test_compare_with_a_baseline_shows_the_noise_floor(checkpoint, mixed_batch):
    path = checkpoint("tiny-qwen2-vl")
    golden = qvlearn.load_encoder(path).trace(*mixed_batch, to_numpy=True)
    ref = reference_trace(reference_tower(path), *mixed_batch)
    port = dict(golden, **{"blocks.1": golden["blocks.1"] + 3e-6 * np.abs(golden["blocks.1"]).max()
                           * np.random.default_rng(0).standard_normal(golden["blocks.1"].shape).astype(np.float32)})
    rows = {r.name: r for r in compare_taps(port, golden, rtol=1e-3, scale_tol=1, baseline=ref)}
    assert all(r.floor == r.floor for n, r in rows.items() if n in ref)
    assert rows["blocks.0"].ok and not rows["blocks.1"].ok and "noise floor" in rows["blocks.1"].note


def test_compare_refuses_what_would_compare_nothing(checkpoint, mixed_batch):
    golden = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl")).trace(*mixed_batch, to_numpy=True)
    with pytest.raises(TapError, match=r"'block\.0' \(did you mean 'blocks\.0'\?\)"):
        compare_taps({"block.0": golden["blocks.0"], "embeddings": golden["embeddings"]}, golden)
    with pytest.raises(TapError, match="no 'embeddings'"):
        compare_taps({"blocks.0": golden["blocks.0"]}, golden)
    assert compare_taps({"blocks.0": golden["blocks.0"]}, golden, stages=["blocks.0"])[0].ok


def test_compare_says_which_permutation(checkpoint, mixed_batch):
    golden = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl")).trace(*mixed_batch, to_numpy=True)
    natural = dict(golden, **{"blocks.0": golden["blocks.0.natural"]})
    note = {r.name: r.note for r in compare_taps(natural, golden)}["blocks.0"]
    assert "saved in natural order where window order is expected" in note
    window = dict(golden, **{"blocks.0.natural": golden["blocks.0"]})
    note = {r.name: r.note for r in compare_taps(window, golden)}["blocks.0.natural"]
    assert "saved in window order where natural order is expected" in note
    swap = np.arange(golden["patch_embeds"].shape[0]).reshape(-1, 4)[:, [0, 2, 1, 3]].reshape(-1)
    transposed = dict(golden, patch_embeds=golden["patch_embeds"][swap])
    note = {r.name: r.note for r in compare_taps(transposed, golden)}["patch_embeds"]
    assert "column-major instead of row-major" in note


def test_taps_cli_videos_animations_and_errors(tmp_path, checkpoint):
    rng = np.random.default_rng(0)
    image = tmp_path / "a.png"
    Image.fromarray(rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)).save(image)
    frames = [Image.fromarray(rng.integers(0, 256, (90, 130, 3), dtype=np.uint8)) for _ in range(3)]
    gif = tmp_path / "clip.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    (tmp_path / "frames").mkdir()
    for i, frame in enumerate(frames):
        frame.save(tmp_path / "frames" / f"f{i}.png")
    model = str(checkpoint("tiny-qwen2.5-vl"))
    out = tmp_path / "t.safetensors"
    # one value per --video: an animated file, then a quoted glob of frame files
    proc = subprocess.run(PY + ["taps", str(image), "--video", str(gif), "--video", str(tmp_path / "frames" / "f*.png"),
                                "--model", model, "--out", str(out), "--stages", "blocks.0.*", "--stages",
                                "embeddings"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "grid_thw [[1, 10, 16], [2, 6, 10], [2, 6, 10]]" in proc.stdout
    taps = load_file(out)
    assert "blocks.0.mlp.gate" in taps and "embeddings" in taps and "blocks.1" not in taps
    assert taps["blocks.0.natural"].shape[0] == 160 + 120 + 120  # one image, two 3-frame videos
    for args, message in [
        ([str(gif)], "has 3 frames (an animation): pass it as a video"),
        ([str(image), "--model", str(tmp_path)], f"no config.json in {tmp_path}"),
        ([str(image), "--stages", "Blocks.0"], "no stage matches 'Blocks.0'"),
        ([], "nothing to encode"),
    ]:
        argv = PY + ["taps", *args, "--out", str(tmp_path / "x.safetensors")]
        if "--model" not in args:
            argv += ["--model", model]
        proc = subprocess.run(argv, capture_output=True, text=True)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    mine = tmp_path / "mine.safetensors"
    save_file({"block.0": taps["blocks.0.norm1"], "Embeddings": taps["embeddings"]}, str(mine),
              metadata={"qvlearn_taps_format": "1"})
    proc = subprocess.run(PY + ["compare", str(mine), str(out)], capture_output=True, text=True)
    assert proc.returncode == 2 and "not tap stages" in proc.stderr and "Traceback" not in proc.stderr
    for command, out, message in [("taps", tmp_path, "is a directory"),
                                  ("taps", tmp_path / "t.npy", "must end in .safetensors"),
                                  ("encode", tmp_path / "e.txt", "must end in .npy, .npz, .safetensors")]:
        proc = subprocess.run(PY + [command, str(image), "--model", model, "--out", str(out)], capture_output=True,
                              text=True)
        assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
