"""Small helpers the notebooks share: the sample photo, the model they run on, a versions line.

Used by every notebook in ``notebooks/``; nothing of the encoder lives here.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

MODEL_ENV = "QVLEARN_MODEL"


def sample_photo():
    """A real photograph shipped with matplotlib (Grace Hopper, 600x512 px, public domain)."""
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return image.convert("RGB")


def model_dir(preset: str = "qwen2.5-vl-7b", seed: int = 0, **vision_overrides) -> Path:
    """The snapshot a notebook runs on: ``$QVLEARN_MODEL`` if set (a real download), else seeded
    random weights of ``preset`` in the real layout, generated once into the qvlearn cache
    (``vision_overrides`` such as ``depth=4`` give a cached variant)."""
    if os.environ.get(MODEL_ENV) and not vision_overrides:
        return Path(os.environ[MODEL_ENV])
    from .cli import default_model

    return default_model(preset, seed=seed, log=lambda *a: None, **vision_overrides)


def uses_real_weights() -> bool:
    return bool(os.environ.get(MODEL_ENV))


def versions() -> str:
    """One line naming the versions and the backend (printed by each notebook's first cell)."""
    import numpy

    from . import __version__
    from .backend import get_backend

    parts = [f"python {platform.python_version()}", f"numpy {numpy.__version__}", f"qvlearn {__version__}"]
    for name in ("torch", "transformers"):
        try:
            module = __import__(name)
            parts.append(f"{name} {module.__version__}")
        except ImportError:
            parts.append(f"{name} missing")
    parts.append(f"backend {get_backend().name}")
    parts.append(f"model {'$' + MODEL_ENV if uses_real_weights() else 'seeded random weights'}")
    return ", ".join(parts)
