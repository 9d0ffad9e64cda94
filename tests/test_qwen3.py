"""Qwen3-VL and Qwen3.5 vision towers (spec §12) against transformers 5.23: every stage, DeepStack included,
on grids the tests do not choose (seeded random grids, larger and smaller than the learned position table),
bf16, sharded and both checkpoint layouts; the interpolated position table integer- and bit-exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import qvlearn
from qvlearn.config import PRESETS, preset_config, vision_config_from_dict
from qvlearn.engine.pos_embed import interpolation_indices_and_weights
from qvlearn.errors import CheckpointError, ConfigError
from qvlearn.tools.check import rel_error
from qvlearn.tools.reference import reference_tower, reference_trace

THIRD = ["tiny-qwen3-vl", "tiny-qwen3.5"]


def _compare_all(encoder, model, pixel_values, grid, stages=None, rtol=1e-5):
    ours = encoder.trace(pixel_values, grid, to_numpy=True, stages=stages)
    theirs = reference_trace(model, pixel_values, grid, stages=list(ours))
    assert set(ours) == set(theirs), set(ours) ^ set(theirs)
    for name, value in ours.items():
        if value.dtype.kind in "iu":
            assert np.array_equal(value, theirs[name]), name
        else:
            assert rel_error(value, theirs[name]) <= rtol, (name, rel_error(value, theirs[name]))
    return ours


@pytest.mark.parametrize("preset", THIRD)
def test_every_stage_matches_transformers(checkpoint, mixed_batch_qwen3, preset):
    path = checkpoint(preset)
    encoder, model = qvlearn.load_encoder(path), reference_tower(path)
    ours = _compare_all(encoder, model, *mixed_batch_qwen3, stages=["*"])
    assert "pos_embeds" in ours and "merger.norm" in ours and "blocks.1.mlp.fc1" in ours
    assert ("deepstack.1" in ours) == (preset == "tiny-qwen3-vl")


def test_deepstack_features_from_the_api(checkpoint, mixed_batch_qwen3):
    path = checkpoint("tiny-qwen3-vl")
    pixel_values, grid = mixed_batch_qwen3
    embeddings, features = qvlearn.load_encoder(path)(pixel_values, grid, deepstack=True)
    with torch.no_grad():
        out = reference_tower(path)(torch.from_numpy(pixel_values), torch.from_numpy(grid))
    assert rel_error(embeddings, out.pooler_output.numpy()) <= 1e-5
    assert len(features) == len(out.deepstack_features) == 2
    for ours, theirs in zip(features, out.deepstack_features):
        assert rel_error(ours, theirs.numpy()) <= 1e-5
    plain = qvlearn.load_encoder(path)(pixel_values, grid)
    assert np.array_equal(plain, embeddings)
    _, none = qvlearn.load_encoder(checkpoint("tiny-qwen3.5"))(pixel_values, grid, deepstack=True)
    assert none == []


@pytest.mark.parametrize("seed", range(4))
def test_random_grids(checkpoint, seed):
    """Grids drawn at random: sides from 2 to 40 patches (the tiny table is 8 x 8, so the table is both
    stretched and shrunk), 1 to 3 entries, 1 or 2 frame pairs."""
    rng = np.random.default_rng(100 + seed)
    grid = np.array([(int(rng.integers(1, 3)), 2 * int(rng.integers(1, 21)), 2 * int(rng.integers(1, 21)))
                     for _ in range(int(rng.integers(1, 4)))])
    path = checkpoint(THIRD[seed % 2], seed=seed)
    encoder = qvlearn.load_encoder(path)
    pixel_values = rng.standard_normal((int(grid.prod(1).sum()), encoder.config.patch_dim)).astype(np.float32)
    _compare_all(encoder, reference_tower(path), pixel_values, grid)


@pytest.mark.parametrize("preset", ["qwen3-vl-2b", "qwen3.5-27b"])
def test_released_widths(checkpoint, preset):
    """The released block shapes (width 1024 / 1152, head_dim 64 / 72, the 48 x 48 table), two blocks deep."""
    overrides = dict(depth=2, deepstack_visual_indexes=[0]) if preset.startswith("qwen3-vl") else dict(depth=2)
    path = checkpoint(preset, dtype="float32", **overrides)
    encoder = qvlearn.load_encoder(path)
    rng = np.random.default_rng(3)
    grid = np.array([[1, 12, 20], [1, 50, 6]])
    pixel_values = rng.standard_normal((int(grid.prod(1).sum()), encoder.config.patch_dim)).astype(np.float32)
    _compare_all(encoder, reference_tower(path), pixel_values, grid, stages=["*"])


def test_interpolation_is_integer_and_bit_exact():
    from transformers import vision_utils as vu

    rng = np.random.default_rng(7)
    for side in (48, 8, 3):
        for _ in range(20):
            grid = [(int(rng.integers(1, 3)), 2 * int(rng.integers(1, 60)), 2 * int(rng.integers(1, 60)))
                    for _ in range(int(rng.integers(1, 4)))]
            ours = interpolation_indices_and_weights(grid, side)
            theirs = vu.get_vision_interpolation_indices_and_weights(
                torch.tensor(grid), side, mode="bilinear", align_corners=True, spatial_merge_size=2)
            assert np.array_equal(ours[0], theirs[0].numpy()) and np.array_equal(ours[1], theirs[1].numpy()), grid


def test_preprocessing_is_bit_identical_to_transformers():
    from transformers import Qwen2VLImageProcessorPil

    rng = np.random.default_rng(5)
    images = [rng.integers(0, 256, (150, 230, 3), dtype=np.uint8), rng.integers(0, 256, (700, 200, 3), dtype=np.uint8),
              rng.integers(0, 256, (2000, 3000, 3), dtype=np.uint8)]
    ours, grid = qvlearn.preprocess(images=images, family="qwen3_vl")
    processor = Qwen2VLImageProcessorPil(patch_size=16, image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                         size={"shortest_edge": 65536, "longest_edge": 16777216})
    ref = processor(images=images, return_tensors="np")
    assert np.array_equal(ours, ref["pixel_values"]) and np.array_equal(grid, ref["image_grid_thw"])
    assert ours.shape[1] == 3 * 2 * 16 * 16 and all(h * w * 256 >= 65536 for _, h, w in grid.tolist())


def test_video_rules_match_transformers():
    """Qwen3VLVideoProcessor's rules, each against transformers' own code: the frame size from one budget over
    frames x H x W, the sampled frames, the timestamps, and the video rows (PIL path), bit for bit."""
    from qvlearn import preprocessing as pp
    from qvlearn.tools.reference import (
        reference_qwen3_frame_indices,
        reference_qwen3_timestamps,
        reference_qwen3_video,
        reference_qwen3_video_size,
    )

    rng = np.random.default_rng(11)
    for _ in range(200):
        t, h, w = int(rng.integers(2, 300)), int(rng.integers(8, 2000)), int(rng.integers(8, 2000))
        if max(h, w) / min(h, w) > 150:
            continue
        lo, hi = [(131072, 786432), (4096, 25165824), (65536, 16777216)][int(rng.integers(3))]
        assert pp.qwen3_video_size(t, h, w, min_pixels=lo, max_pixels=hi) == \
            reference_qwen3_video_size(t, h, w, lo, hi), (t, h, w, lo, hi)
    for total, video_fps in [(300, 30.0), (50, 25.0), (10, 30.0), (1799, 29.97), (54000, 30.0), (7, 24.0), (3, 1.0)]:
        indices = pp.qwen3_frame_indices(total, video_fps)
        assert np.array_equal(indices, reference_qwen3_frame_indices(total, video_fps)), (total, video_fps)
        assert pp.qwen3_timestamps(indices, video_fps) == reference_qwen3_timestamps(indices, video_fps)
    for count, size in [(5, (90, 130)), (4, (400, 300)), (2, (20, 60))]:
        frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]
        ours, grid = qvlearn.preprocess(videos=[frames], family="qwen3_vl")
        ref, ref_grid = reference_qwen3_video(frames)
        assert np.array_equal(ours, ref) and np.array_equal(grid, ref_grid), (count, size)
    with pytest.raises(qvlearn.ImageError, match="at least 2 frames"):
        qvlearn.preprocess(videos=[[frames[0]]], family="qwen3_vl")


def test_bf16_sharded_and_both_layouts_load_the_same(tmp_path, checkpoint, mixed_batch_qwen3):
    pixel_values, grid = mixed_batch_qwen3
    single = qvlearn.load_encoder(checkpoint("tiny-qwen3-vl"))(pixel_values, grid)
    for name, kwargs in [("sharded", dict(max_shard_bytes=30_000)), ("visual", dict(prefix="visual."))]:
        path = qvlearn.save_random_checkpoint(tmp_path / name, "tiny-qwen3-vl", **kwargs)
        assert np.array_equal(qvlearn.load_encoder(path)(pixel_values, grid), single), name
    resident = qvlearn.load_encoder(checkpoint("tiny-qwen3-vl"), weights_dtype="bfloat16")
    assert np.array_equal(resident(pixel_values, grid), single)          # bf16 kept resident, widened per block
    keys = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())["weight_map"]
    assert all(k.startswith("model.visual.") for k in keys) and len(set(keys.values())) > 1
    # bf16 on disk: the reference loads the same file; the forward matches at the float32 tolerance
    assert rel_error(single, reference_tower(checkpoint("tiny-qwen3-vl"))(
        torch.from_numpy(pixel_values), torch.from_numpy(grid)).pooler_output.detach().numpy()) <= 1e-5


def test_both_layouts_at_once_are_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    path = qvlearn.save_random_checkpoint(tmp_path / "both", "tiny-qwen3.5")
    tensors = load_file(path / "model.safetensors")
    tensors.update({k[len("model."):]: v for k, v in tensors.items()})
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="under model.visual. and visual.; a snapshot uses one layout"):
        qvlearn.load_encoder(path)


def test_configs_of_every_released_type():
    for model_type in ("qwen3_vl", "qwen3_vl_moe", "qwen3_5", "qwen3_5_moe"):
        vision = dict(PRESETS["qwen3-vl-8b"]["vision_config"])
        if model_type.startswith("qwen3_5"):
            vision["deepstack_visual_indexes"] = []
        cfg = vision_config_from_dict({"model_type": model_type, "vision_config": vision})
        assert cfg.family == model_type.replace("_moe", "") and cfg.patch_dim == 1536
    assert vision_config_from_dict({"model_type": "qwen3_vl_vision", "depth": 3, "deepstack_visual_indexes": [0]}) \
        .out_hidden_size == 3584  # class defaults fill the rest, as transformers
    with pytest.raises(ConfigError, match="positive square"):
        preset_config("tiny-qwen3-vl", num_position_embeddings=60)
    with pytest.raises(ConfigError, match="outside"):
        preset_config("tiny-qwen3-vl", deepstack_visual_indexes=[9])
    assert vision_config_from_dict({"model_type": "qwen4_exp", "vision_config": {}}).family == "qwen4_exp"
    with pytest.raises(ConfigError, match="does not implement"):
        vision_config_from_dict({"model_type": "glm4v", "vision_config": {}})


def test_strict_device_runs_the_third_generation(checkpoint, mixed_batch_qwen3):
    from qvlearn.backend import get_backend, is_strict_array

    pixel_values, grid = mixed_batch_qwen3
    strict = get_backend("strict")
    out, features = qvlearn.load_encoder(checkpoint("tiny-qwen3-vl"), backend="strict")(pixel_values, grid,
                                                                                        deepstack=True)
    assert is_strict_array(out) and all(is_strict_array(f) for f in features)
    reference = qvlearn.load_encoder(checkpoint("tiny-qwen3-vl"))(pixel_values, grid)
    assert rel_error(strict.to_numpy(out), reference) < 1e-6


@pytest.mark.gpu
def test_cupy_matches_numpy_third_generation(checkpoint, mixed_batch_qwen3):
    import cupy

    pixel_values, grid = mixed_batch_qwen3
    for preset in THIRD:
        out = qvlearn.load_encoder(checkpoint(preset), backend="cupy")(pixel_values, grid)
        reference = qvlearn.load_encoder(checkpoint(preset))(pixel_values, grid)
        assert rel_error(cupy.asnumpy(out), reference) < 1e-5


def _qwen3_prompt(image_grid, video_grid, merge=2):
    """A Qwen3-VL prompt as its processor writes it: an image run, then each frame pair of the video as its own
    run after a timestamp text ("<0.5 seconds>" stands in as 3 text tokens)."""
    from qvlearn.bridge import IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, VISION_END_TOKEN_ID, VISION_START_TOKEN_ID

    tokens = int(np.prod(image_grid) // merge ** 2)
    ids = [1, 2, VISION_START_TOKEN_ID] + [IMAGE_TOKEN_ID] * tokens + [VISION_END_TOKEN_ID]
    t, h, w = video_grid
    for _ in range(t):
        ids += [7, 8, 9, VISION_START_TOKEN_ID] + [VIDEO_TOKEN_ID] * (h * w // merge ** 2) + [VISION_END_TOKEN_ID]
    return np.array(ids + [3, 4, 5])


def test_qwen3_get_rope_index_matches_transformers():
    from qvlearn.bridge import IMAGE_TOKEN_ID, VIDEO_TOKEN_ID, get_rope_index
    from qvlearn.tools.reference import reference_get_rope_index

    image_grid, video_grid = np.array([[1, 6, 10]]), np.array([[3, 4, 8]])
    ids = _qwen3_prompt(image_grid[0], video_grid[0])
    types_ = np.where(ids == IMAGE_TOKEN_ID, 1, np.where(ids == VIDEO_TOKEN_ID, 2, 0))
    ours, delta = get_rope_index(ids, image_grid, video_grid, family="qwen3_vl")
    ref, ref_delta = reference_get_rope_index("qwen3_vl")(torch.from_numpy(ids)[None], torch.from_numpy(types_)[None],
                                                          torch.from_numpy(image_grid), torch.from_numpy(video_grid))
    assert np.array_equal(ours, ref.numpy()) and np.array_equal(delta, ref_delta.numpy())
    # every frame pair starts at its own text position: no tokens-per-second interval
    video_t = ours[0, 0][ids == VIDEO_TOKEN_ID].reshape(3, -1)
    assert all(len(set(row)) == 1 for row in video_t.tolist()) and video_t[1, 0] > video_t[0, 0]
    with pytest.raises(qvlearn.InputError):
        get_rope_index(ids, image_grid, video_grid, family="qwen3_vl_moe")


def test_interleaved_mrope_and_deepstack_injection():
    from qvlearn.bridge import add_deepstack, mrope_frequency_rows
    from qvlearn.tools.reference import reference_add_deepstack, reference_mrope_rows

    for section in ([24, 20, 20], [11, 11, 10]):
        rows = mrope_frequency_rows(2 * sum(section), section, interleaved=True)
        assert np.array_equal(rows, reference_mrope_rows(section, 2 * sum(section))), section
    rows = mrope_frequency_rows(128, (24, 20, 20), interleaved=True)
    assert rows[:6].tolist() == [0, 1, 2, 0, 1, 2] and rows[60:].tolist() == [0, 0, 0, 0]
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((2, 9, 6)).astype(np.float32)
    mask = rng.random((2, 9)) < 0.4
    feature = rng.standard_normal((int(mask.sum()), 6)).astype(np.float32)
    assert np.array_equal(add_deepstack(hidden, mask, feature), reference_add_deepstack(hidden, mask, feature))
    with pytest.raises(qvlearn.InputError, match="visual positions"):
        add_deepstack(hidden, mask, feature[1:])


def test_command_line_encodes_taps_and_compares_qwen3(tmp_path, checkpoint, capsys):
    from PIL import Image

    from qvlearn.tools import cli

    image = tmp_path / "img.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (150, 230, 3), dtype=np.uint8)).save(image)
    model = str(checkpoint("tiny-qwen3-vl"))
    assert cli.main(["encode", str(image), "--model", model, "--out", str(tmp_path / "e.npy")]) == 0
    expected = qvlearn.load_encoder(model)(*qvlearn.preprocess(images=[str(image)], family="qwen3_vl"))
    assert np.array_equal(np.load(tmp_path / "e.npy"), expected)
    assert "grid_thw (1, 14, 20) -> 70 tokens (224x320 px)" in capsys.readouterr().out   # 16-px patches
    for name, extra in (("ours", []), ("theirs", ["--reference"])):
        assert cli.main(["taps", str(image), "--model", model, "--out", str(tmp_path / f"{name}.safetensors"),
                         "--stages", "*", "--quiet", *extra]) == 0
    assert cli.main(["compare", str(tmp_path / "ours.safetensors"), str(tmp_path / "theirs.safetensors")]) == 0
    report = capsys.readouterr().out
    assert "deepstack.1" in report and "pos_embeds" in report
