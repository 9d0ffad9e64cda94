"""Small helpers the notebooks share: the sample photo, the model they run on, a versions line.

Used by every notebook in ``notebooks/``; nothing of the encoder lives here.
"""

from __future__ import annotations

import os
import platform
import sys
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


LEARNER_PACKAGE = "my_encoder"
"""The learner's own encoder: the folder beside the notebooks that :func:`keep` writes, one module per notebook."""


def keep(*functions, module: str, imports: str = "import numpy as np", folder=None) -> None:
    """Save the learner's ``functions`` (defined in the notebook's cells) as ``my_encoder/<module>.py``.

    The module holds each function's source as the notebook defines it, below ``imports`` (earlier kept modules
    by absolute name, ``from my_encoder.rope import apply_rotary``, which is also how later notebooks import it).
    Edit a function in its notebook, run that cell and the ``keep`` cell again, and every later notebook uses your
    version. ``folder`` defaults to ``my_encoder/`` in the current directory (the notebooks' folder, where Jupyter
    and nbval run them). The new text is run once before anything is written: a module that would not stand on its
    own (a failing import, a global a function reads that it lacks) is refused and the file it would replace is
    left as it was; otherwise the file is written whole. Prints one line: what was kept, where."""
    import builtins
    import inspect
    import types

    from ..atomic import atomic_file

    if not module.isidentifier():
        raise ValueError(f"module {module!r} must be a Python name such as 'rope'")
    if not functions or not all(inspect.isfunction(f) for f in functions):
        raise TypeError("keep() takes the functions to save, e.g. keep(rotate_half, apply_rotary, module='rope')")
    folder = Path(folder) if folder is not None else Path.cwd() / LEARNER_PACKAGE
    parts = [f'"""my_encoder.{module}: functions kept from a notebook by qvlearn.tools.course.keep. Edit them in the '
             'notebook\nand run its cells again; this file is rewritten."""\n', imports.strip() + "\n"]
    for f in functions:
        try:
            source = inspect.getsource(f)
        except (OSError, TypeError) as exc:
            raise ValueError(f"cannot read the source of {f.__name__} ({exc}); define it with def in a cell") from None
        parts.append(source)
    text = "\n\n".join(p.rstrip("\n") + "\n" for p in parts)
    path = folder / f"{module}.py"
    name = f"{LEARNER_PACKAGE}.{module}"
    kept = types.ModuleType(name)
    kept.__file__ = str(path)
    exec(compile(text, str(path), "exec"), vars(kept))  # it stands on its own: its imports resolve
    for f in functions:  # a global a function reads that the module lacks would fail only when called
        missing = sorted(n for n in _global_names(getattr(kept, f.__name__).__code__)
                         if not hasattr(kept, n) and not hasattr(builtins, n))
        if missing:
            raise NameError(f"{f.__name__} uses {', '.join(missing)}, which {LEARNER_PACKAGE}/{module}.py would not "
                            f"define: add the import to imports= (or keep the function that defines it too); "
                            f"nothing was written")
    init = folder / "__init__.py"
    if not init.exists():
        with atomic_file(init) as tmp:
            tmp.write_text('"""The learner\'s own encoder, one module per notebook (written by keep())."""\n')
    if not (path.exists() and path.read_text() == text):
        with atomic_file(path) as tmp:
            tmp.write_text(text)
    sys.modules[name] = kept  # the next `from my_encoder.<module> import ...` reads this version
    if LEARNER_PACKAGE in sys.modules:
        vars(sys.modules[LEARNER_PACKAGE])[module] = kept  # `import my_encoder.rope` reads it too
    print(f"kept in {LEARNER_PACKAGE}/{module}.py: {', '.join(f.__name__ for f in functions)}")


def _global_names(code) -> set[str]:
    """The global names a function's code (and the functions and lambdas inside it) reads."""
    import dis

    names = {i.argval for i in dis.get_instructions(code) if i.opname in ("LOAD_GLOBAL", "LOAD_NAME")}
    for const in code.co_consts:
        if hasattr(const, "co_names"):
            names |= _global_names(const)
    return names
