"""Images and videos -> ``pixel_values [N, 1176]`` and ``grid_thw [k, 3]``.

Explained in ``notebooks/01_preprocessing.ipynb``; videos in ``notebooks/09_videos_and_batches.ipynb``.

Pipeline, bit-identical to transformers' ``Qwen2VLImageProcessorPil``:

1. Loading as transformers does: a file path gets its EXIF orientation applied (a phone photo stored sideways
   comes out upright) and a plain RGB conversion; an in-memory image is taken as it is (no EXIF rotation) and
   its transparency is composited onto white. See :func:`load_image`.
2. :func:`smart_resize` picks a size that is a multiple of 28 (= patch 14 x merge 2) with an area in
   ``[min_pixels, max_pixels]``; PIL resizes with BICUBIC.
3. Rescale by 1/255 (in float64, then float32) and normalise with the OpenAI CLIP mean/std (float32).
4. Images are duplicated to two frames (``temporal_patch_size`` = 2); videos are padded to an even
   frame count by repeating the last frame.
5. :func:`patchify`: the 9-D reshape/transpose that emits patches in 2x2 merge-block order, each row
   laid out (channel, temporal, row-in-patch, col-in-patch) = 3 x 2 x 14 x 14 = 1176 values.

Preprocessing is host-side work: it returns NumPy arrays; the encoder moves them to its backend.
"""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError
from .families import FAMILIES, IMAGENET_STANDARD_MEAN, IMAGENET_STANDARD_STD, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

# Released preprocessor_config.json values. Note that transformers' *class* default for
# max_pixels is 28*28*1280 = 1003520; the released checkpoints use 12845056.
MIN_PIXELS = 3136
MAX_PIXELS = 12845056
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
MAX_ASPECT_RATIO = 200
LARGEST_TARGET_PIXELS = 1 << 26
"""The largest resize target qvlearn accepts (67,108,864 pixels, 4x the largest released ``max_pixels``): above it
``pixel_values`` alone pass 1.5 GB per frame and a forward is out of reach of any machine, so a runaway
``min_pixels``/``max_pixels`` is refused before any work instead of filling the memory."""

FAMILY_PREPROCESSING = {name: dict(f.preprocessing) for name, f in FAMILIES.items()}
"""The image preprocessing of each family as released (``preprocessor_config.json``; the family table's
``preprocessing``); all four use transformers' Qwen2VLImageProcessor(Pil). Qwen3-VL / Qwen3.5: 16-px patches
(resize factor 32), mean = std = 0.5, and 65536 .. 16777216 pixels (64 .. 16384 merged tokens of 32 x 32 px)."""


def smart_resize(height: int, width: int, factor: int = PATCH_SIZE * MERGE_SIZE,
                 min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Target ``(height, width)``: multiples of ``factor`` with area in ``[min_pixels, max_pixels]``.

    1. aspect ratio above 200 -> :class:`ImageError`;
    2. round each side to a multiple of ``factor`` with Python's ``round`` (ties to even: 70 -> 56);
    3. too large: scale by beta = sqrt(h*w / max_pixels) and *floor* each side (at least ``factor``);
    4. too small: scale by beta = sqrt(min_pixels / (h*w)) and *ceil* each side.
    """
    for name, value in (("height", height), ("width", width)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
            raise ImageError(f"image {name} must be a positive integer, got {value!r} (is the image empty?)")
    if not (0 < min_pixels <= max_pixels):
        raise ImageError(f"need 0 < min_pixels <= max_pixels, got min_pixels={min_pixels}, max_pixels={max_pixels}")
    height, width = int(height), int(width)
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageError(f"aspect ratio {ratio:.1f}:1 of a {height}x{width} (HxW) image is above the model's limit of "
                         f"{MAX_ASPECT_RATIO}:1; crop or pad the image first")
    h_bar = round(height / factor) * factor  # Python round: banker's rounding, as transformers
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


# ---------------------------------------------------------------------------------------------------
# Loading and converting one image
# ---------------------------------------------------------------------------------------------------
EXIF_ORIENTATION = 0x0112  # the EXIF tag phones write instead of rotating the pixels (1 = upright .. 8)


def load_image(image, steps: "Steps | None" = None) -> Image.Image:
    """A PIL image in RGB from a file path, a PIL image, or an ``H x W x 3`` (or ``H x W`` / ``H x W x 4``) uint8
    array, exactly as transformers' ``Qwen2VLImageProcessorPil`` receives it:

    * a **path** goes through transformers' ``load_image``: the EXIF orientation is applied
      (``PIL.ImageOps.exif_transpose``: a phone photo whose pixels are stored sideways, Orientation 6, comes out
      upright), then a plain ``convert("RGB")`` (a transparent pixel keeps its stored colour, often black);
    * an **in-memory** PIL image or array is used as it is: no EXIF rotation (``Image.open`` does not apply it;
      call ``PIL.ImageOps.exif_transpose`` yourself, a warning says so), and any transparency is composited onto
      white.

    ``steps``: the replaceable steps (:class:`Steps`; ``to_rgb`` is used here).
    """
    steps = steps or STEPS
    if isinstance(image, (str, os.PathLike)):
        return _load_path(image, steps)
    if isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    elif not isinstance(image, Image.Image):
        raise ImageError(f"an image must be a PIL.Image, a file path or an HxWx3 uint8 array, got "
                         f"{type(image).__name__}")
    if getattr(image, "n_frames", 1) > 1:
        _refuse_animation(image.n_frames, getattr(image, "filename", "") or "this image")
    if image.width == 0 or image.height == 0:
        raise ImageError(f"empty image of size {image.width}x{image.height} (WxH)")
    orientation = _orientation(image)
    if orientation not in (1, None):
        import warnings

        warnings.warn(f"an in-memory image has EXIF Orientation {orientation}: like transformers, qvlearn uses its "
                      "pixels as stored (sideways or mirrored). Pass the file path, or PIL.ImageOps.exif_transpose("
                      "image), to get it upright", UserWarning, stacklevel=3)
    warn_lossy_mode(image, "an in-memory image")
    return steps.to_rgb(image)


def _orientation(image: Image.Image) -> int | None:
    try:
        return image.getexif().get(EXIF_ORIENTATION)
    except Exception:  # a malformed EXIF block: transformers' exif_transpose would fail on it too
        return None


def _check_path(given, what: str = "image") -> Path:
    """A readable file, or an error that says what the path is instead."""
    text = os.fspath(given)
    if isinstance(text, str) and text.startswith(("http://", "https://", "data:")):
        raise ImageError(f"{text[:80]} is a URL: qvlearn reads local files only; download the {what} first")
    path = Path(text)
    if not text:
        raise ImageError(f"an empty {what} path: give a file name")
    if path.is_dir():
        raise ImageError(f"{path} is a directory, not an {what} file")
    if path.is_symlink() and not path.exists():
        try:
            os.stat(path)
        except OSError as exc:
            why = "a loop of links" if exc.errno == errno.ELOOP else f"its target {os.readlink(path)} is missing"
            raise ImageError(f"{path} is a symbolic link that leads to no file ({why})") from None
    if not path.exists():
        raise ImageError(f"{what} file not found: {path}")
    if not path.is_file():
        raise ImageError(f"{path} is not a regular file (a device or a pipe?)")
    if not os.access(path, os.R_OK):
        raise ImageError(f"{path} is not readable (permissions): check the file's owner and mode")
    return path


def _open_checked(path: Path):
    """``Image.open`` with every failure an :class:`ImageError` (including Pillow's decompression-bomb guard)."""
    try:
        return Image.open(path)
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: {exc} Pillow refuses images this large as a possible decompression bomb. "
                         "Downscale the image first, or, if you trust the file, raise PIL.Image.MAX_IMAGE_PIXELS "
                         "(it would be resized to at most max_pixels anyway)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"cannot read image file {path}: {exc} (is it a complete PNG/JPEG/... file?)") from None


def _load_path(image, steps) -> Image.Image:
    """transformers' ``load_image`` on a path, ``exif_transpose(Image.open(path)).convert("RGB")``, then the
    processor's RGB conversion."""
    path = _check_path(image)
    with _open_checked(path) as opened:
        frames = getattr(opened, "n_frames", 1)
        if frames > 1:
            _refuse_animation(frames, str(path))
        if opened.width == 0 or opened.height == 0:
            raise ImageError(f"empty image of size {opened.width}x{opened.height} (WxH) in {path}")
        try:
            opened.load()  # force decoding now: truncated files fail here, not later
            warn_lossy_mode(opened, str(path))
            upright = ImageOps.exif_transpose(opened)  # EXIF Orientation 2..8 applied, as transformers does
            # then the processor's own RGB step, as for any image: after convert("RGB") a palette image still has
            # info["transparency"] (now a colour), and those pixels are composited onto white; RGBA alpha is gone
            return steps.to_rgb(upright.convert("RGB"))
        except Image.DecompressionBombError as exc:
            raise ImageError(f"{path}: {exc} Downscale the image first") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"cannot read image file {path}: {exc} (is it a complete PNG/JPEG/... file?)") from None


def warn_lossy_mode(image: Image.Image, where: str = "an image") -> None:
    """Warn when Pillow's ``convert("RGB")``, which transformers and qvlearn both apply, destroys the picture: 16-bit
    and 32-bit integer images (modes I;16*, I) have every value above 255 clipped to 255, float images (F) have
    their values cut to whole numbers in 0..255 (floats in [0, 1] become black), and CIE L*a*b* images (LAB) are
    converted without their white point or colour profile. The conversion itself is left as transformers does it."""
    import warnings

    mode = image.mode
    if mode == "LAB":
        warnings.warn(f"{where} is a CIE L*a*b* image (mode LAB): like transformers, qvlearn converts it with Pillow's "
                      "built-in LAB -> RGB formula, which ignores the file's white point and colour profile. Convert "
                      "it to sRGB with a colour-managed tool first if its colours matter", UserWarning, stacklevel=3)
        return
    if not (mode in ("I", "F") or mode.startswith("I;16")):
        return
    values = np.asarray(image)
    if values.size == 0:
        return
    lo, hi = float(values.min()), float(values.max())
    if mode == "F":
        lost = float(np.mean((values < 0) | (values > 255) | (values != np.floor(values))))
        what = "cuts each value to a whole number in 0..255 (floats in [0, 1] become black)"
        fix = "(np.clip(np.asarray(im), 0, 1) * 255).round().astype(np.uint8)"
    else:
        lost = float(np.mean((values < 0) | (values > 255)))
        what = "clips every value above 255 to 255 (the picture turns white)"
        fix = "(np.asarray(im) / 257).round().astype(np.uint8)" if mode.startswith("I;16") else \
            "np.asarray(im) scaled to 0..255 and cast to np.uint8"
    if lost == 0:
        return
    warnings.warn(f"{where} has mode {mode} (values {lo:g}..{hi:g}): like transformers, qvlearn converts it with "
                  f"Pillow's convert('RGB'), which {what}: {lost:.1%} of its pixels are changed. Convert it to 8 bits "
                  f"yourself first, e.g. Image.fromarray({fix}) for a grey image", UserWarning, stacklevel=3)


def _refuse_animation(frames: int, where: str) -> None:
    """An animated GIF/PNG/WebP or a multi-page TIFF is not one image."""
    raise ImageError(f"{where} has {frames} frames (an animation): pass it as a video, "
                     "preprocess(videos=[path]) or `--video path` on the command line, or extract one frame")


def _array_to_pil(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8:
        raise ImageError(f"image arrays must be uint8 (0..255), got {array.dtype}; convert with "
                         "(x * 255).round().astype(np.uint8) for floats in [0, 1]")
    if array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (3, 4)):
        if 0 in array.shape:
            raise ImageError(f"empty image array of shape {array.shape}")
        return Image.fromarray(np.ascontiguousarray(array))
    raise ImageError(f"image arrays must be HxWx3 (RGB), HxWx4 (RGBA) or HxW (grey), channels last; got shape "
                     f"{array.shape}")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB conversion; any alpha channel or palette transparency is composited onto white."""
    has_alpha = "A" in image.getbands() or image.info.get("transparency") is not None
    if has_alpha:
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, image).convert("RGB")
    return image.convert("RGB")


def resize(image: Image.Image, height: int, width: int) -> np.ndarray:
    """PIL bicubic resize to ``(height, width)``; returns uint8 ``[H, W, 3]``."""
    if (image.height, image.width) != (height, width):
        image = image.resize((width, height), resample=Image.Resampling.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def rescale_and_normalize(pixels: np.ndarray, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD) -> np.ndarray:
    """uint8 ``[..., H, W, 3]`` -> float32 ``[..., 3, H, W]``: ``(x / 255 - mean) / std``.

    The order of roundings matches transformers' PIL backend bit for bit: the 1/255 rescale in
    float64, a cast to float32, then the normalisation in float32.
    """
    x = (pixels.astype(np.float64) * (1 / 255)).astype(np.float32)  # rescale
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)  # [..., H, W, 3] normalise
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))  # channels first: [..., 3, H, W]


def patchify(frames: np.ndarray, patch_size: int = PATCH_SIZE, merge_size: int = MERGE_SIZE,
             temporal_patch_size: int = TEMPORAL_PATCH_SIZE) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Frames ``[T, C, H, W]`` (T a multiple of temporal_patch_size) -> ``([t*h*w, C*T'*P*P], (t, h, w))``.

    The 9-D view names every axis, then one transpose puts them in the order the model wants::

        (grid_t, tp, C, block_row, in_row, patch_row, block_col, in_col, patch_col)
                     -> (grid_t, block_row, block_col, in_row, in_col, C, tp, patch_row, patch_col)

    so rows walk 2x2 merge blocks in raster order, the 4 patches of a block in order
    (0,0), (0,1), (1,0), (1,1), and each row is laid out (C, tp, P, P) like a Conv3d input.
    """
    T, C, H, W = frames.shape
    p, m, tp = patch_size, merge_size, temporal_patch_size
    if T % tp or H % (p * m) or W % (p * m):
        raise ImageError(f"frames of shape {frames.shape} cannot be patchified: T must be a multiple of {tp} and "
                         f"H, W multiples of {p * m}")
    grid_t, grid_h, grid_w = T // tp, H // p, W // p
    x = frames.reshape(grid_t, tp, C, grid_h // m, m, p, grid_w // m, m, p)
    x = x.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)  # -> (t, bh, bw, ih, iw, C, tp, ph, pw)
    rows = x.reshape(grid_t * grid_h * grid_w, C * tp * p * p)
    return np.ascontiguousarray(rows, dtype=np.float32), (grid_t, grid_h, grid_w)


# ---------------------------------------------------------------------------------------------------
# Whole images and videos
# ---------------------------------------------------------------------------------------------------
def _check_target(height: int, width: int, frames: int = 1) -> None:
    if height * width > LARGEST_TARGET_PIXELS:
        raise ImageError(f"the resize target {height}x{width} (HxW) = {height * width:,} pixels per frame is above "
                         f"qvlearn's limit of {LARGEST_TARGET_PIXELS:,} ({frames} frame(s) would need "
                         f"{frames * height * width * 3 * 4 / 2**30:.1f} GiB of float32 pixels alone); lower "
                         "min_pixels / max_pixels (released models use at most 16,777,216)")


def preprocess_image(image, *, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=PATCH_SIZE,
                     merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE, mean=OPENAI_CLIP_MEAN,
                     std=OPENAI_CLIP_STD, steps: "Steps | None" = None):
    """One image -> ``(rows [h*w, C*T*P*P] float32, (1, h, w))``."""
    steps = steps or STEPS
    pil = load_image(image, steps)
    height, width = steps.smart_resize(pil.height, pil.width, patch_size * merge_size, min_pixels, max_pixels)
    _check_target(height, width)
    frame = rescale_and_normalize(steps.resize(pil, height, width), mean, std)  # [3, H, W]
    frames = np.broadcast_to(frame, (temporal_patch_size, *frame.shape))  # the temporal copy
    return patchify(frames, patch_size, merge_size, temporal_patch_size)


def read_frames(video) -> list[Image.Image]:
    """The frames of an animated image file (GIF, APNG, WebP, multi-page TIFF), read by Pillow one by one.

    Video containers (mp4, mkv, ...) need a video decoder: decode them to frames first (e.g. with
    ``qwen-vl-utils``, torchvision, decord or ffmpeg) and pass the frames as a list."""
    from PIL import ImageSequence

    if isinstance(video, Image.Image):
        opened, close = video, False
    else:
        path = _check_path(video, "video")
        try:
            opened, close = _open_checked(path), True
        except ImageError as exc:
            raise ImageError(f"{exc}. Pillow reads animated GIF/PNG/WebP and multi-page TIFF; decode other videos "
                             "(mp4, mkv, ...) to a list of frame files first") from None
    try:
        return [frame.copy() for frame in ImageSequence.Iterator(opened)]
    finally:
        if close:
            opened.close()


def preprocess_video(video, *, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=PATCH_SIZE,
                     merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE, mean=OPENAI_CLIP_MEAN,
                     std=OPENAI_CLIP_STD, steps: "Steps | None" = None):
    """One video (frames as a list, a ``[T, H, W, 3]`` uint8 array, or an animated image file that Pillow reads
    frame by frame) -> ``(rows, (t, h, w))``.

    All frames share one resize target (computed from the frame size). An odd frame count is padded
    by repeating the last frame, so ``t = ceil(T / 2)``.
    """
    steps = steps or STEPS
    pils = _video_frames(video, steps)
    (h0, w0), = {(p.height, p.width) for p in pils}
    height, width = steps.smart_resize(h0, w0, patch_size * merge_size, min_pixels, max_pixels)
    _check_target(height, width, len(pils))
    stack = np.stack([steps.resize(p, height, width) for p in pils])  # [T, H, W, 3] uint8
    pad = -len(pils) % temporal_patch_size
    if pad:  # repeat the last frame up to a multiple of temporal_patch_size
        stack = np.concatenate([stack, np.repeat(stack[-1:], pad, axis=0)])
    return patchify(rescale_and_normalize(stack, mean, std), patch_size, merge_size, temporal_patch_size)


def _video_frames(video, steps) -> list[Image.Image]:
    """The frames of one video as RGB PIL images of one size, with clear errors."""
    if isinstance(video, np.ndarray) and video.ndim == 4:
        frames = list(video)
    elif isinstance(video, (str, os.PathLike)) or (isinstance(video, Image.Image)
                                                   and getattr(video, "n_frames", 1) > 1):
        frames = read_frames(video)
    elif isinstance(video, (Image.Image, np.ndarray)):
        raise ImageError("each video must be a sequence of frames (or a [T, H, W, 3] uint8 array), got a single "
                         "image; pass videos=[frames] for one video, or images=[...] for still images")
    elif isinstance(video, Sequence):
        frames = list(video)
    else:
        raise ImageError(f"a video must be a sequence of frames, got {type(video).__name__}")
    if not frames:
        raise ImageError("a video has no frames")
    pils = [load_image(f, steps) for f in frames]
    sizes = {(p.height, p.width) for p in pils}
    if len(sizes) != 1:
        raise ImageError(f"all frames of a video must have one size, got {sorted(sizes)} (HxW)")
    return pils


# ---------------------------------------------------------------------------------------------------
# Qwen3-VL / Qwen3.5 videos (transformers' Qwen3VLVideoProcessor, explained in notebooks/16_lineage.ipynb)
# ---------------------------------------------------------------------------------------------------
QWEN3_VIDEO_MIN_PIXELS = 128 * 32 * 32   # Qwen3VLVideoProcessor's class defaults: a budget over T x H x W
QWEN3_VIDEO_MAX_PIXELS = 768 * 32 * 32


def qwen3_video_size(num_frames: int, height: int, width: int, factor: int = 32, temporal_factor: int = 2,
                     min_pixels: int = QWEN3_VIDEO_MIN_PIXELS, max_pixels: int = QWEN3_VIDEO_MAX_PIXELS):
    """Qwen3-VL's video ``smart_resize``: the frame size ``(H, W)`` for a whole video, with the pixel limits applied
    to ``frames x H x W`` (not to one frame, as for images and Qwen2/2.5-VL videos). Frames smaller than ``factor``
    are first scaled up (truncating); then each side is rounded to a multiple of ``factor`` (Python's ``round``), the
    frame count to a multiple of ``temporal_factor``, and if ``t x H x W`` leaves ``[min_pixels, max_pixels]`` both
    sides are scaled by ``sqrt`` of the ratio computed with the *unrounded* frame count, floored (at least ``factor``)
    or ceiled."""
    if num_frames < temporal_factor:
        raise ImageError(f"a Qwen3-VL video needs at least {temporal_factor} frames, got {num_frames}")
    if height < factor or width < factor:
        scale = max(factor / height, factor / width)
        height, width = int(height * scale), int(width * scale)
    ratio = max(height, width) / min(height, width)
    if ratio > MAX_ASPECT_RATIO:
        raise ImageError(f"aspect ratio {ratio:.1f}:1 of {height}x{width} (HxW) frames is above the model's limit of "
                         f"{MAX_ASPECT_RATIO}:1; crop or pad the video first")
    h_bar, w_bar = round(height / factor) * factor, round(width / factor) * factor
    t_bar = round(num_frames / temporal_factor) * temporal_factor
    if t_bar * h_bar * w_bar > max_pixels:
        beta = math.sqrt((num_frames * height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif t_bar * h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (num_frames * height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def qwen3_frame_indices(total_frames: int, video_fps: float, fps: float = 2.0, min_frames: int = 4,
                        max_frames: int = 768) -> np.ndarray:
    """Which frames Qwen3VLVideoProcessor samples (``do_sample_frames=True``, its default): ``n = int(total /
    video_fps * fps)`` clamped to ``[min_frames, min(max_frames, total)]``, then ``linspace(0, total - 1, n)``
    rounded (first and last frame included; ``n`` need not be even: the processor pads the last frame pair)."""
    if total_frames < 1 or not video_fps > 0:
        raise ImageError(f"need at least one frame and a positive frame rate, got {total_frames} frames at {video_fps}")
    n = int(total_frames / video_fps * fps)
    n = min(max(n, min_frames), max_frames, total_frames)
    return np.linspace(0, total_frames - 1, n).round().astype(int)


def qwen3_timestamps(indices, video_fps: float, temporal_patch_size: int = 2) -> list[float]:
    """The seconds Qwen3-VL's processor writes before each frame pair (``<{t:.1f} seconds>``): the mean time of the
    pair's first and last frame, the last index repeated to fill an odd pair."""
    indices = list(np.asarray(indices).tolist())
    if len(indices) % temporal_patch_size:
        indices += [indices[-1]] * (temporal_patch_size - len(indices) % temporal_patch_size)
    times = [i / video_fps for i in indices]
    return [(times[i] + times[i + temporal_patch_size - 1]) / 2 for i in range(0, len(times), temporal_patch_size)]


def preprocess_video_qwen3(video, *, min_pixels=QWEN3_VIDEO_MIN_PIXELS, max_pixels=QWEN3_VIDEO_MAX_PIXELS,
                           patch_size=16, merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE,
                           mean=IMAGENET_STANDARD_MEAN, std=IMAGENET_STANDARD_STD, steps: "Steps | None" = None):
    """One (already sampled) Qwen3-VL video -> ``(rows [t*h*w, 1536], (t, h, w))``: one frame size for the whole
    video from :func:`qwen3_video_size`, Pillow bicubic, mean = std = 0.5, the last frame repeated to an even
    count, then the same patch order as every family."""
    steps = steps or STEPS
    pils = _video_frames(video, steps)
    (h0, w0), = {(p.height, p.width) for p in pils}
    height, width = qwen3_video_size(len(pils), h0, w0, patch_size * merge_size, temporal_patch_size, min_pixels,
                                     max_pixels)
    _check_target(height, width, len(pils))
    stack = np.stack([steps.resize(p, height, width) for p in pils])
    pad = -len(pils) % temporal_patch_size
    if pad:
        stack = np.concatenate([stack, np.repeat(stack[-1:], pad, axis=0)])
    return patchify(rescale_and_normalize(stack, mean, std), patch_size, merge_size, temporal_patch_size)


def preprocess(images=None, videos=None, *, family: str | None = None, min_pixels: int | None = None,
               max_pixels: int | None = None, patch_size: int | None = None, merge_size: int = MERGE_SIZE,
               temporal_patch_size: int = TEMPORAL_PATCH_SIZE, mean=None, std=None,
               video_min_pixels: int | None = None, video_max_pixels: int | None = None,
               steps: "Steps | None" = None) -> tuple[np.ndarray, np.ndarray]:
    """Images and/or videos -> ``(pixel_values float32 [N, C*T*P*P], grid_thw int64 [k, 3])``.

    ``images``: one image or a list (PIL images, file paths, HxWx3 uint8 arrays).
    ``videos``: a list of videos, each a list of frames or a ``[T, H, W, 3]`` uint8 array.
    Rows and grid entries come images first, then videos, each in the order given.
    ``family`` (any of :data:`qvlearn.families.FAMILIES`, ``"qwen2_5_vl"`` by default, or a loaded encoder's
    ``encoder.family``) picks the released preprocessor values of :data:`FAMILY_PREPROCESSING`: 14-px patches,
    CLIP mean/std and 3136 .. 12845056 pixels for Qwen2/2.5-VL and Qwen2.5-Omni; 16-px patches, mean = std = 0.5
    and 65536 .. 16777216 pixels for Qwen3-VL / Qwen3.5 / Qwen4-Exp; 16-px patches with Qwen2's CLIP mean/std and
    pixel limits for Qwen3-Omni (its processor is Qwen2VLImageProcessor, videos frame by frame as Qwen2-VL's).
    Explicit arguments override them. Qwen3-VL / Qwen3.5 / Qwen4-Exp videos
    (frames already sampled, e.g. by :func:`qwen3_frame_indices`) follow Qwen3VLVideoProcessor instead: one budget
    over frames x height x width, ``video_min_pixels`` .. ``video_max_pixels`` (default: its class defaults
    131072 .. 786432; released checkpoints ship their own values in ``video_preprocessor_config.json``).
    ``steps``: the replaceable steps (:class:`Steps`), e.g. a bug of the zoo's.
    """
    if (family or "qwen2_5_vl") not in FAMILIES:
        raise ImageError(f"unknown family {family!r}; choose one of {sorted(FAMILIES)}")
    kind = FAMILIES[family or "qwen2_5_vl"]
    defaults = kind.preprocessing
    if steps is not None and not isinstance(steps, Steps):
        raise ImageError(f"steps must be a qvlearn.preprocessing.Steps, got {type(steps).__name__}")
    for name, value in (("min_pixels", min_pixels), ("max_pixels", max_pixels), ("patch_size", patch_size),
                        ("merge_size", merge_size), ("temporal_patch_size", temporal_patch_size),
                        ("video_min_pixels", video_min_pixels), ("video_max_pixels", video_max_pixels)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0):
            raise ImageError(f"{name} must be a positive whole number, got {value!r}")
    for name, value in (("mean", mean), ("std", std)):
        if value is not None and (np.ndim(value) != 1 or len(value) != 3 or
                                  not all(isinstance(v, (int, float, np.floating)) for v in value)):
            raise ImageError(f"{name} must be three numbers (one per RGB channel), got {value!r}")
    if std is not None and min(std) <= 0:
        raise ImageError(f"std must be positive, got {std!r}")
    min_pixels = defaults["min_pixels"] if min_pixels is None else min_pixels
    max_pixels = defaults["max_pixels"] if max_pixels is None else max_pixels
    patch_size = defaults["patch_size"] if patch_size is None else patch_size
    mean = defaults["mean"] if mean is None else mean
    std = defaults["std"] if std is None else std
    if images is None and videos is None:
        raise ImageError("nothing to preprocess: pass images=... and/or videos=...")
    if images is not None and (isinstance(images, (Image.Image, str, os.PathLike))
                               or (isinstance(images, np.ndarray) and images.ndim in (2, 3))):
        images = [images]
    if (isinstance(videos, np.ndarray) and videos.ndim == 4) or isinstance(videos, (str, os.PathLike)):
        videos = [videos]  # one video: an array of frames, or one file
    kw = dict(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size, merge_size=merge_size,
              temporal_patch_size=temporal_patch_size, mean=mean, std=std, steps=steps)
    parts = [preprocess_image(im, **kw) for im in (images or [])]
    if kind.video_processor == "qwen3":  # Qwen3VLVideoProcessor: its own limits over frames x H x W
        vkw = dict(kw, min_pixels=video_min_pixels or QWEN3_VIDEO_MIN_PIXELS,
                   max_pixels=video_max_pixels or QWEN3_VIDEO_MAX_PIXELS)
        parts += [preprocess_video_qwen3(v, **vkw) for v in (videos or [])]
    else:
        parts += [preprocess_video(v, **kw) for v in (videos or [])]
    if not parts:
        raise ImageError("nothing to preprocess: the image and video lists are empty")
    pixel_values = np.concatenate([rows for rows, _ in parts])
    grid_thw = np.asarray([grid for _, grid in parts], dtype=np.int64)
    return pixel_values, grid_thw


@dataclass(frozen=True)
class Steps:
    """The preprocessing steps a caller may replace, by name: ``to_rgb`` (PIL image -> RGB PIL image),
    ``smart_resize`` ((height, width, factor, min_pixels, max_pixels) -> (height, width)) and ``resize`` ((PIL image,
    height, width) -> uint8 [H, W, 3]). Pass ``preprocess(..., steps=Steps(resize=my_resize))``: the bug zoo's
    preprocessing bugs are such tables."""

    to_rgb: object = to_rgb
    smart_resize: object = smart_resize
    resize: object = resize


STEPS = Steps()
"""The steps as transformers runs them."""
