"""Images and videos -> ``pixel_values [N, 1176]`` and ``grid_thw [k, 3]``.

Explained in ``notebooks/01_preprocessing.ipynb``; videos in ``notebooks/09_videos_and_batches.ipynb``.

Pipeline (spec §5), bit-identical to transformers' ``Qwen2VLImageProcessorPil``:

1. RGB conversion; transparency is composited onto white.
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

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

# Released preprocessor_config.json values (spec §1.3). Note that transformers' *class* default for
# max_pixels is 28*28*1280 = 1003520; the released checkpoints use 12845056.
MIN_PIXELS = 3136
MAX_PIXELS = 12845056
PATCH_SIZE = 14
MERGE_SIZE = 2
TEMPORAL_PATCH_SIZE = 2
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 200


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
def load_image(image) -> Image.Image:
    """A PIL image in RGB from a PIL image, a file path, or an ``H x W x 3`` (or ``H x W`` / ``H x W x 4``)
    uint8 array. Transparency is composited onto white, as transformers does."""
    if isinstance(image, (str, os.PathLike)):
        path = Path(image)
        if not path.is_file():
            raise ImageError(f"image file not found: {path}")
        try:
            with Image.open(path) as opened:
                frames = getattr(opened, "n_frames", 1)
                opened.load()  # force decoding now: truncated files fail here, not later
                image = opened.copy()
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise ImageError(f"cannot read image file {path}: {exc} (is it a complete PNG/JPEG/... file?)") from None
        if frames > 1:
            _refuse_animation(frames, str(path))
    elif isinstance(image, np.ndarray):
        image = _array_to_pil(image)
    elif not isinstance(image, Image.Image):
        raise ImageError(f"an image must be a PIL.Image, a file path or an HxWx3 uint8 array, got "
                         f"{type(image).__name__}")
    if getattr(image, "n_frames", 1) > 1:
        _refuse_animation(image.n_frames, getattr(image, "filename", "") or "this image")
    if image.width == 0 or image.height == 0:
        raise ImageError(f"empty image of size {image.width}x{image.height} (WxH)")
    return to_rgb(image)


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
def preprocess_image(image, *, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=PATCH_SIZE,
                     merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE):
    """One image -> ``(rows [h*w, 1176] float32, (1, h, w))``."""
    pil = load_image(image)
    height, width = smart_resize(pil.height, pil.width, patch_size * merge_size, min_pixels, max_pixels)
    frame = rescale_and_normalize(resize(pil, height, width))  # [3, H, W]
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
        path = Path(video)
        if not path.is_file():
            raise ImageError(f"video file not found: {path}")
        try:
            opened, close = Image.open(path), True
        except (UnidentifiedImageError, OSError) as exc:
            raise ImageError(f"cannot read {path} as frames: {exc}. Pillow reads animated GIF/PNG/WebP and "
                             "multi-page TIFF; decode other videos to a list of frames first") from None
    try:
        return [frame.copy() for frame in ImageSequence.Iterator(opened)]
    finally:
        if close:
            opened.close()


def preprocess_video(video, *, min_pixels=MIN_PIXELS, max_pixels=MAX_PIXELS, patch_size=PATCH_SIZE,
                     merge_size=MERGE_SIZE, temporal_patch_size=TEMPORAL_PATCH_SIZE):
    """One video (frames as a list, a ``[T, H, W, 3]`` uint8 array, or an animated image file that Pillow reads
    frame by frame) -> ``(rows, (t, h, w))``.

    All frames share one resize target (computed from the frame size). An odd frame count is padded
    by repeating the last frame, so ``t = ceil(T / 2)``.
    """
    if isinstance(video, np.ndarray) and video.ndim == 4:
        frames = list(video)
    elif isinstance(video, (str, os.PathLike)) or (isinstance(video, Image.Image) and getattr(video, "n_frames", 1) > 1):
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
    pils = [load_image(f) for f in frames]
    sizes = {(p.height, p.width) for p in pils}
    if len(sizes) != 1:
        raise ImageError(f"all frames of a video must have one size, got {sorted(sizes)} (HxW)")
    (h0, w0), = sizes
    height, width = smart_resize(h0, w0, patch_size * merge_size, min_pixels, max_pixels)
    stack = np.stack([resize(p, height, width) for p in pils])  # [T, H, W, 3] uint8
    pad = -len(pils) % temporal_patch_size
    if pad:  # repeat the last frame up to a multiple of temporal_patch_size
        stack = np.concatenate([stack, np.repeat(stack[-1:], pad, axis=0)])
    return patchify(rescale_and_normalize(stack), patch_size, merge_size, temporal_patch_size)


def preprocess(images=None, videos=None, *, min_pixels: int = MIN_PIXELS, max_pixels: int = MAX_PIXELS,
               patch_size: int = PATCH_SIZE, merge_size: int = MERGE_SIZE,
               temporal_patch_size: int = TEMPORAL_PATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Images and/or videos -> ``(pixel_values float32 [N, 1176], grid_thw int64 [k, 3])``.

    ``images``: one image or a list (PIL images, file paths, HxWx3 uint8 arrays).
    ``videos``: a list of videos, each a list of frames or a ``[T, H, W, 3]`` uint8 array.
    Rows and grid entries come images first, then videos, each in the order given.
    Defaults are the released preprocessor values (min 3136, max 12845056 pixels).
    """
    if images is None and videos is None:
        raise ImageError("nothing to preprocess: pass images=... and/or videos=...")
    if images is not None and (isinstance(images, (Image.Image, str, os.PathLike))
                               or (isinstance(images, np.ndarray) and images.ndim in (2, 3))):
        images = [images]
    if isinstance(videos, np.ndarray) and videos.ndim == 4:
        videos = [videos]
    kw = dict(min_pixels=min_pixels, max_pixels=max_pixels, patch_size=patch_size, merge_size=merge_size,
              temporal_patch_size=temporal_patch_size)
    parts = [preprocess_image(im, **kw) for im in (images or [])]
    parts += [preprocess_video(v, **kw) for v in (videos or [])]
    if not parts:
        raise ImageError("nothing to preprocess: the image and video lists are empty")
    pixel_values = np.concatenate([rows for rows, _ in parts])
    grid_thw = np.asarray([grid for _, grid in parts], dtype=np.int64)
    return pixel_values, grid_thw
