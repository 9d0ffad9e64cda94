"""Phone photos: the EXIF orientation, and how a file differs from an in-memory image, exactly as transformers'
``Qwen2VLImageProcessorPil`` treats them (bit for bit)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image
from transformers.image_utils import load_image as hf_load_image

import qvlearn
from qvlearn.tools.reference import reference_preprocess, reference_video

FORMATS = ("jpg", "png", "webp", "tiff")  # the formats Pillow reads (and writes) EXIF for
STORED = (90, 150)  # H x W as stored in the file: not square, so a missed rotation changes the grid


def _photo(seed=0) -> Image.Image:
    """Smooth gradients plus noise: JPEG keeps the structure, and every orientation gives other pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: STORED[0], : STORED[1]]
    base = np.stack([x * 255 // STORED[1], y * 255 // STORED[0], (x + y) % 256], axis=-1)
    noise = rng.integers(0, 40, (*STORED, 3))
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _save(path, orientation: int, image: Image.Image | None = None):
    exif = Image.Exif()
    exif[0x0112] = orientation
    (image or _photo()).save(path, exif=exif)
    return path


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_path_is_read_upright_as_transformers_reads_it(tmp_path, fmt, orientation):
    path = _save(tmp_path / f"photo.{fmt}", orientation)
    with Image.open(path) as opened:
        assert opened.getexif().get(0x0112) == orientation  # the file really carries the tag
    ref, ref_grid = reference_preprocess([str(path)])
    for given in (str(path), path):  # a str and a pathlib.Path
        pv, grid = qvlearn.preprocess(images=[given])
        np.testing.assert_array_equal(grid, ref_grid)
        np.testing.assert_array_equal(pv, ref)
    # orientations 5..8 turn the picture by 90 degrees: the grid's height and width swap
    stored_grid = qvlearn.preprocess(images=[np.asarray(_photo())])[1]
    expected = stored_grid[:, [0, 2, 1]] if orientation >= 5 else stored_grid
    np.testing.assert_array_equal(grid, expected)


@pytest.mark.parametrize("fmt", ("jpg", "png"))
@pytest.mark.parametrize("orientation", (1, 3, 6, 8))
def test_an_in_memory_image_is_used_as_stored_as_transformers_does(tmp_path, fmt, orientation):
    """transformers passes a PIL image through as it is: ``Image.open`` does not apply the EXIF orientation, so
    neither does qvlearn; a warning says how to get the upright picture."""
    path = _save(tmp_path / f"photo.{fmt}", orientation)
    with Image.open(path) as opened:
        ref, ref_grid = reference_preprocess([opened])
    with Image.open(path) as opened, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pv, grid = qvlearn.preprocess(images=[opened])
    np.testing.assert_array_equal(grid, ref_grid)
    np.testing.assert_array_equal(pv, ref)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    if orientation == 1:
        assert not any("EXIF" in m for m in messages)
    else:
        assert any(f"EXIF Orientation {orientation}" in m and "exif_transpose" in m for m in messages), messages


def test_a_phone_photo_is_no_longer_read_sideways(tmp_path):
    """The case that was reported: a JPEG with Orientation 6 given as a path had its grid transposed."""
    path = _save(tmp_path / "phone.jpg", 6, _photo().resize((1200, 640)))  # stored 640 x 1200 (H x W), landscape
    grid = qvlearn.preprocess(images=[str(path)])[1]
    ref_grid = reference_preprocess([str(path)])[1]
    assert grid.tolist() == ref_grid.tolist() == [[1, 86, 46]]  # upright: portrait, taller than wide


def test_transparency_of_a_file_and_of_an_in_memory_image(tmp_path):
    """transformers' load_image gives a file a plain RGB conversion (transparent pixels keep their stored colour);
    an in-memory RGBA image is composited onto white. qvlearn follows both."""
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (70, 110, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(rng.random((70, 110)) < 0.5, 0, 255)
    path = tmp_path / "logo.png"
    Image.fromarray(rgba).save(path)
    from_file, _ = qvlearn.preprocess(images=[str(path)])
    np.testing.assert_array_equal(from_file, reference_preprocess([str(path)])[0])
    with Image.open(path) as opened:
        in_memory, _ = qvlearn.preprocess(images=[opened])
        np.testing.assert_array_equal(in_memory, reference_preprocess([opened])[0])
    assert not np.array_equal(from_file, in_memory)  # the two rules really differ on this image
    palette = tmp_path / "palette.png"
    Image.fromarray(rgba[..., :3]).convert("P").save(palette, transparency=0)
    np.testing.assert_array_equal(qvlearn.preprocess(images=[str(palette)])[0],
                                  reference_preprocess([str(palette)])[0])


@pytest.mark.parametrize("orientation", (1, 6, 7))
def test_video_frame_files_are_read_like_image_files(tmp_path, orientation):
    """Frames given as files get transformers' load_image too (EXIF applied), then the video processor."""
    paths = [_save(tmp_path / f"f{i}.jpg", orientation, _photo(i)) for i in range(3)]
    pv, grid = qvlearn.preprocess(videos=[[str(p) for p in paths]])
    upright = [np.asarray(hf_load_image(str(p))) for p in paths]
    ref, ref_grid = reference_video(upright)
    np.testing.assert_array_equal(np.asarray(grid[0]), np.asarray(ref_grid).reshape(-1))
    np.testing.assert_array_equal(pv, ref)
