"""Shared fixtures: seeded random checkpoints in the real layout, written once per test session."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("QVLEARN_BLAS", "as-is")  # the CLI in a subprocess keeps the BLAS as loaded (tests/test_blas.py)

import numpy as np
import pytest

import qvlearn


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """``checkpoint(preset, dtype="bfloat16", seed=0, **overrides)`` -> snapshot directory (cached)."""
    cache = {}
    root = tmp_path_factory.mktemp("checkpoints")

    def make(preset, dtype="bfloat16", seed=0, **overrides):
        key = (preset, dtype, seed, repr(sorted(overrides.items())))
        if key not in cache:
            suffix = "-".join(f"{k}{v}" for k, v in sorted(overrides.items()))
            name = f"{preset}-{dtype}-{seed}-" + suffix.replace(",", "_").replace("[", "").replace("]", "")
            cache[key] = qvlearn.save_random_checkpoint(root / name.replace(" ", ""), preset, seed=seed,
                                                        dtype=dtype, **overrides)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def mixed_batch():
    """The batch the parity tests share: an image whose merged grid does not divide into 4x4 windows,
    a second image whose merged grid divides exactly (so transformers pads a whole empty window row and
    column), and a 3-frame video (padded to 4 frames = two frame pairs)."""
    rng = np.random.default_rng(1)
    odd = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)  # -> 140x224 px, grid 10x16, merged 5x8
    square = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)  # -> grid 16x16, merged 8x8
    video = [rng.integers(0, 256, (90, 130, 3), dtype=np.uint8) for _ in range(3)]  # -> (2, 6, 10)
    return qvlearn.preprocess(images=[odd, square], videos=[video])


@pytest.fixture(scope="session")
def mixed_batch_qwen3():
    """The third generation's batch: two images of odd sizes preprocessed as Qwen3-VL is (16-px patches,
    mean = std = 0.5; 64 .. 16384 merged tokens), then a 3-frame video's rows (padded to two frame pairs)."""
    from qvlearn.preprocessing import patchify, rescale_and_normalize

    rng = np.random.default_rng(2)
    odd = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    tall = rng.integers(0, 256, (700, 200, 3), dtype=np.uint8)
    images, image_grid = qvlearn.preprocess(images=[odd, tall], family="qwen3_vl")
    frames = rng.integers(0, 256, (3, 64, 96, 3), dtype=np.uint8)
    frames = np.concatenate([frames, frames[-1:]])
    video, video_grid = patchify(rescale_and_normalize(frames, (0.5,) * 3, (0.5,) * 3), patch_size=16)
    return np.concatenate([images, video]), np.concatenate([image_grid, [video_grid]])


@pytest.fixture(scope="session")
def mixed_batch_for(mixed_batch, mixed_batch_qwen3):
    """The mixed batch of a config's generation: ``mixed_batch_for(encoder.config)``."""
    return lambda config: mixed_batch_qwen3 if config.kind.generation == 3 else mixed_batch


def pytest_collection_modifyitems(config, items):
    try:
        qvlearn.get_backend("cupy")
        has_gpu = True
    except Exception:
        has_gpu = False
    if not has_gpu:
        skip = pytest.mark.skip(reason="needs CuPy and an NVIDIA GPU (run on a GPU machine)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


def pytest_sessionstart(session):
    """`make test-next` runs the suite against another transformers: make sure that is the one imported."""
    expected = os.environ.get("QVLEARN_EXPECT_TRANSFORMERS")
    if expected:
        import transformers

        if transformers.__version__ != expected:
            pytest.exit(f"expected transformers {expected}, but {transformers.__version__} was imported from "
                        f"{transformers.__file__}", returncode=3)


@pytest.fixture
def photo(tmp_path):
    """A 100 x 140 random RGB PNG in the test's folder (the CLI's and bad-input tests' image)."""
    from PIL import Image

    path = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (100, 140, 3), dtype=np.uint8)).save(path)
    return path
