"""Preprocessing against transformers: smart_resize, pixel_values (bit for bit), video patchify."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

import qvlearn
from qvlearn.tools.reference import reference_preprocess, reference_video


@pytest.mark.parametrize("size, expected_released, expected_class_default", [
    ((1080, 1920), (1092, 1932), (728, 1316)),
    ((480, 640), (476, 644), (476, 644)),
    ((4000, 3000), (4004, 2996), (1148, 840)),
    ((1024, 1024), (1036, 1036), (980, 980)),
    ((2048, 4096), (2044, 4088), (700, 1400)),
    ((10, 10), (56, 56), (56, 56)),
    ((70, 70), (56, 56), (56, 56)),  # 70/28 = 2.5 rounds to 2 (banker's rounding), not 3
    ((42, 100), (56, 112), (56, 112)),
])
def test_smart_resize_spec_examples(size, expected_released, expected_class_default):
    assert qvlearn.smart_resize(*size) == expected_released
    assert qvlearn.smart_resize(*size, max_pixels=1003520) == expected_class_default
    assert hf_smart_resize(*size, min_pixels=3136, max_pixels=12845056) == expected_released


@settings(max_examples=300, deadline=None)
@given(h=st.integers(1, 9000), w=st.integers(1, 9000),
       limits=st.sampled_from([(3136, 12845056), (3136, 1003520), (100352, 602112), (256 * 28 * 28, 1280 * 28 * 28)]))
def test_smart_resize_matches_transformers(h, w, limits):
    lo, hi = limits
    try:
        expected = hf_smart_resize(h, w, factor=28, min_pixels=lo, max_pixels=hi)
    except ValueError:
        with pytest.raises(qvlearn.ImageError, match="aspect ratio"):
            qvlearn.smart_resize(h, w, min_pixels=lo, max_pixels=hi)
        return
    assert qvlearn.smart_resize(h, w, min_pixels=lo, max_pixels=hi) == expected


def test_smart_resize_rejects_extreme_aspect_ratio():
    with pytest.raises(qvlearn.ImageError, match="above the model's limit of 200"):
        qvlearn.smart_resize(20, 5000)
    assert qvlearn.smart_resize(20, 4000)  # exactly 200 is allowed


def _image(mode, h, w, seed):
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    if mode == "RGBA":
        alpha = Image.fromarray(rng.integers(0, 256, (h, w), dtype=np.uint8))
        base.putalpha(alpha)
        return base
    if mode == "P-transparent":
        pal = base.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
        pal.info["transparency"] = 3
        return pal
    return base.convert(mode)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "P-transparent", "CMYK", "I;16"])
@pytest.mark.parametrize("size", [(37, 53), (150, 230), (301, 199)])
def test_pixel_values_bit_identical(mode, size):
    image = _image(mode, *size, seed=sum(size))
    ours, grid = qvlearn.preprocess(images=[image])
    ref, ref_grid = reference_preprocess([image])
    assert ours.dtype == np.float32 and grid.dtype == np.int64
    np.testing.assert_array_equal(grid, ref_grid)
    np.testing.assert_array_equal(ours, ref)  # bit for bit


def test_pixel_values_several_images_paths_and_arrays(tmp_path):
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(61, 47, 3), (480, 640, 3), (29, 300, 3)]]
    paths = []
    for i, a in enumerate(arrays):
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(a).save(paths[-1])
    ref, ref_grid = reference_preprocess([Image.fromarray(a) for a in arrays])
    for inputs in (arrays, paths, [str(p) for p in paths], [Image.open(p) for p in paths]):
        ours, grid = qvlearn.preprocess(images=inputs)
        np.testing.assert_array_equal(grid, ref_grid)
        np.testing.assert_array_equal(ours, ref)


def test_pixel_values_with_other_limits():
    image = _image("RGB", 700, 900, 5)
    ours, grid = qvlearn.preprocess(images=image, min_pixels=256 * 28 * 28, max_pixels=512 * 28 * 28)
    ref, ref_grid = reference_preprocess([image], min_pixels=256 * 28 * 28, max_pixels=512 * 28 * 28)
    np.testing.assert_array_equal(grid, ref_grid)
    np.testing.assert_array_equal(ours, ref)


def test_small_image_is_upscaled():
    tiny = np.random.default_rng(2).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    ours, grid = qvlearn.preprocess(images=tiny)
    ref, ref_grid = reference_preprocess([tiny])
    assert grid.tolist() == ref_grid.tolist() == [[1, 4, 6]]  # 56x84 px: area at least 3136
    np.testing.assert_array_equal(ours, ref)


@pytest.mark.parametrize("frames", [1, 2, 3, 5, 8])
def test_video_matches_transformers_patchify(frames):
    rng = np.random.default_rng(frames)
    video = [rng.integers(0, 256, (90, 130, 3), dtype=np.uint8) for _ in range(frames)]
    ours, grid = qvlearn.preprocess(videos=[video])
    ref, ref_grid = reference_video(video)
    assert grid.tolist() == ref_grid.tolist() == [[(frames + 1) // 2, 6, 10]]
    np.testing.assert_array_equal(ours, ref)


def test_images_then_videos_in_one_call():
    rng = np.random.default_rng(9)
    image = rng.integers(0, 256, (100, 80, 3), dtype=np.uint8)
    video = rng.integers(0, 256, (3, 60, 60, 3), dtype=np.uint8)  # a [T, H, W, 3] array
    pv, grid = qvlearn.preprocess(images=[image], videos=[video])
    pv_i, g_i = qvlearn.preprocess(images=[image])
    pv_v, g_v = qvlearn.preprocess(videos=video)
    np.testing.assert_array_equal(pv, np.concatenate([pv_i, pv_v]))
    assert grid.tolist() == g_i.tolist() + g_v.tolist()


def test_patch_rows_are_merge_block_major():
    """Row k of an image is patch (row, col) in 2x2 block order: check against a coordinate image."""
    h, w = 4, 6  # patches
    frame = np.zeros((2, 3, h * 14, w * 14), np.float32)
    for r in range(h):
        for c in range(w):
            frame[:, 0, r * 14:(r + 1) * 14, c * 14:(c + 1) * 14] = r
            frame[:, 1, r * 14:(r + 1) * 14, c * 14:(c + 1) * 14] = c
    rows, grid = qvlearn.preprocessing.patchify(frame)
    coords = [(int(row[0]), int(row[2 * 14 * 14])) for row in rows]
    assert coords[:8] == [(0, 0), (0, 1), (1, 0), (1, 1), (0, 2), (0, 3), (1, 2), (1, 3)]
    np.testing.assert_array_equal(np.array(coords), qvlearn.engine.rotary.rotary_position_ids([grid]))


# -- bad input ----------------------------------------------------------------------------------------
def test_bad_images_raise_clear_errors(tmp_path):
    with pytest.raises(qvlearn.ImageError, match="empty image"):
        qvlearn.preprocess(images=[Image.new("RGB", (0, 10))])
    with pytest.raises(qvlearn.ImageError, match="empty image array"):
        qvlearn.preprocess(images=[np.zeros((0, 10, 3), np.uint8)])
    with pytest.raises(qvlearn.ImageError, match="aspect ratio"):
        qvlearn.preprocess(images=[np.zeros((4, 1000, 3), np.uint8)])
    with pytest.raises(qvlearn.ImageError, match="not found"):
        qvlearn.preprocess(images=[tmp_path / "missing.png"])
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    (tmp_path / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(qvlearn.ImageError, match="cannot read image file"):
        qvlearn.preprocess(images=[tmp_path / "truncated.png"])
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(qvlearn.ImageError, match="cannot read image file"):
        qvlearn.preprocess(images=[tmp_path / "text.jpg"])
    with pytest.raises(qvlearn.ImageError, match="must be uint8"):
        qvlearn.preprocess(images=[np.zeros((30, 30, 3), np.float32)])
    with pytest.raises(qvlearn.ImageError, match="HxWx3"):
        qvlearn.preprocess(images=[np.zeros((3, 30, 30, 2), np.uint8)])
    with pytest.raises(qvlearn.ImageError, match="a single image"):
        qvlearn.preprocess(videos=[np.zeros((30, 30, 3), np.uint8)])
    with pytest.raises(qvlearn.ImageError, match="one size"):
        qvlearn.preprocess(videos=[[np.zeros((30, 30, 3), np.uint8), np.zeros((30, 40, 3), np.uint8)]])
    with pytest.raises(qvlearn.ImageError, match="nothing to preprocess"):
        qvlearn.preprocess()
