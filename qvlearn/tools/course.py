"""Small helpers the notebooks share: the sample photo, the model they run on, a versions line.

Used by every notebook in ``notebooks/``; nothing of the encoder lives here.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

MODEL_ENV = "QVLEARN_MODEL"
FIGURES_ENV = "QVLEARN_WRITE_FIGURES"  # set by `make notebooks` (tools/regenerate_notebooks.py) only
IMAGES_DIR = Path(__file__).resolve().parents[2] / "images"


def sample_photo():
    """A real photograph shipped with matplotlib (Grace Hopper, 600x512 px, public domain)."""
    from matplotlib import cbook
    from PIL import Image

    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as image:
        return image.convert("RGB")


def model_env(family: str) -> str:
    """The variable naming a downloaded snapshot of one family: ``QVLEARN_MODEL_QWEN2_5_VL`` for ``qwen2_5_vl``."""
    return f"{MODEL_ENV}_{family.upper()}"


def real_snapshot(family: str) -> Path | None:
    """A downloaded snapshot of ``family`` for the notebooks, or None: ``$QVLEARN_MODEL_<FAMILY>`` (one variable
    per family, e.g. ``QVLEARN_MODEL_QWEN2_VL``), else ``$QVLEARN_MODEL`` when its ``config.json`` is of that
    family. A snapshot of another family is never used in its place (its parity checks would not hold)."""
    from ..config import read_config

    for variable in (model_env(family), MODEL_ENV):
        if os.environ.get(variable):
            path = Path(os.environ[variable])
            found = read_config(path).family
            if found == family:
                return path
            if variable != MODEL_ENV:
                raise ValueError(f"${variable} is a {found} snapshot ({path}), not {family}")
    return None


def model_dir(preset: str = "qwen2.5-vl-7b", seed: int = 0, **vision_overrides) -> Path:
    """The snapshot a notebook runs on: a downloaded snapshot **of the preset's family** if one is named
    (:func:`real_snapshot`), else seeded random weights of ``preset`` in the real layout, generated once into the
    qvlearn cache. ``tiny-*`` presets and ``vision_overrides`` (``depth=4``: a cached variant) always give random
    weights: they ask for a particular small tower. When ``$QVLEARN_MODEL`` is of another family, a warning says so
    and the random weights are used."""
    from ..config import preset_config
    from .cache import default_model

    family = preset_config(preset).family
    if not preset.startswith("tiny-") and not vision_overrides:
        real = real_snapshot(family)
        if real is not None:
            return real
        if os.environ.get(MODEL_ENV):
            import warnings

            warnings.warn(f"$QVLEARN_MODEL is not a {family} snapshot; this cell asks for {preset}, so it runs on "
                          f"seeded random weights of {preset} (set ${model_env(family)} to a {family} download)",
                          stacklevel=2)
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


PIPELINE = (
    ("image", "H x W x 3 uint8", "notebook 01"),
    ("preprocess", "pixel_values [N, 1176]", "notebooks 01, 09"),
    ("patch embed", "[N, 1280]", "notebook 02"),
    ("2-D RoPE", "cos, sin [N, 80]", "notebook 03"),
    ("windows", "window order, segments", "notebook 04"),
    ("32 blocks", "[N, 1280] each", "notebooks 05, 06"),
    ("merger", "[N/4, 3584]", "notebook 07"),
    ("LLM", "pads, M-RoPE ids", "notebook 10"),
)
"""The encoder's pipeline as the course walks it: (stage, what comes out, the notebook that explains it), with the
Qwen2.5-VL-7B tower's values."""
PIPELINE_QWEN3 = (
    ("image", "H x W x 3 uint8", "notebooks 01, 13"),
    ("preprocess", "pixel_values [N, 1536]", "notebook 13"),
    ("patch embed", "+ positions [N, 1152]", "notebook 13"),
    ("2-D RoPE", "cos, sin [N, 72]", "notebooks 03, 13"),
    ("27 blocks", "full attention, [N, 1152]", "notebook 13"),
    ("DeepStack", "3 x [N/4, 4096]", "notebook 13"),
    ("merger", "[N/4, 4096]", "notebook 13"),
    ("LLM", "interleaved M-RoPE", "notebooks 10, 13"),
)
"""The same for the third generation, with the Qwen3-VL-8B tower's values: no windows, a learned position table,
DeepStack features from blocks 8, 16 and 24."""


def show_pipeline(*here: str, family: str = "qwen2_5_vl"):
    """A one-line picture of the pipeline with the stages ``here`` highlighted (each notebook's first figure);
    ``family="qwen3_vl"`` draws the third generation's."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import FancyBboxPatch

    from ..families import family as family_entry

    pipeline = PIPELINE_QWEN3 if family_entry(family).position_table else PIPELINE
    names = [name for name, _, _ in pipeline]
    unknown = [h for h in here if h not in names]
    if unknown:
        raise ValueError(f"unknown pipeline stage(s) {unknown}; stages are {names}")
    fig, ax = plt.subplots(figsize=(13, 1.35))
    for i, (name, shape, notebook) in enumerate(pipeline):
        lit = name in here
        ax.add_patch(FancyBboxPatch((i * 1.6, 0), 1.3, 1, boxstyle="round,pad=0.05",
                                    facecolor="#f4a261" if lit else "#e9ecef", edgecolor="#555" if lit else "#bbb"))
        ax.text(i * 1.6 + 0.65, 0.66, name, ha="center", va="center", fontsize=9, weight="bold" if lit else "normal")
        ax.text(i * 1.6 + 0.65, 0.3, shape, ha="center", va="center", fontsize=6.5, color="#333")
        ax.text(i * 1.6 + 0.65, -0.22, notebook, ha="center", va="center", fontsize=6.5, color="#777")
        if i:
            ax.annotate("", xy=(i * 1.6 - 0.08, 0.5), xytext=(i * 1.6 - 0.22, 0.5),
                        arrowprops=dict(arrowstyle="->", color="#777"))
    ax.set_xlim(-0.15, len(pipeline) * 1.6 - 0.15)
    ax.set_ylim(-0.4, 1.1)
    ax.set_axis_off()
    fig.tight_layout()
    plt.show()


def uses_real_weights(preset: str = "qwen2.5-vl-7b") -> bool:
    """Whether :func:`model_dir` gives a downloaded snapshot for ``preset``."""
    from ..config import preset_config

    return not preset.startswith("tiny-") and real_snapshot(preset_config(preset).family) is not None


def versions() -> str:
    """One line naming the versions and the backend (printed by each notebook's first cell)."""
    import numpy

    from .. import __version__
    from ..backend import get_backend

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
