"""Small helpers the notebooks share: the sample photo, the model they run on, a versions line.

Used by every notebook in ``notebooks/``; nothing of the encoder lives here.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

MODEL_ENV = "QVLEARN_MODEL"
FIGURES_ENV = "QVLEARN_WRITE_FIGURES"  # set by `make notebooks` (tools/regenerate_notebooks.py) only
IMAGES_DIR = Path(__file__).resolve().parent.parent / "images"


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


def figure_path(name: str) -> Path:
    """Where a notebook writes the figure ``name`` (e.g. ``"tour.png"``).

    ``images/<name>`` in the repository when ``$QVLEARN_WRITE_FIGURES`` is set, which only `make notebooks`
    does; a temporary folder otherwise. So running a notebook, under nbval or in JupyterLab, never rewrites a
    tracked file (a PNG's bytes differ from machine to machine).
    """
    if Path(name).name != name:
        raise ValueError(f"figure name {name!r} must be a plain file name such as 'tour.png'")
    if os.environ.get(FIGURES_ENV):
        folder = IMAGES_DIR
    else:
        import tempfile

        folder = Path(tempfile.gettempdir()) / "qvlearn-figures"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def save_figure(fig, name: str, dpi: int = 100) -> None:
    """``fig.savefig`` to :func:`figure_path` (``images/`` only under `make notebooks`); prints nothing."""
    fig.savefig(figure_path(name), dpi=dpi, bbox_inches="tight")


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
