"""qvlearn: the vision encoder of Qwen2-VL, Qwen2.5-VL, Qwen3-VL and Qwen3.5, rebuilt in NumPy (CuPy on a GPU),
stage by stage, and checked against transformers.

    import qvlearn
    pixel_values, grid_thw = qvlearn.preprocess(images=["photo.jpg"])
    encoder = qvlearn.load_encoder("path/to/Qwen2.5-VL-7B-Instruct")   # a Hugging Face snapshot
    embeddings = encoder(pixel_values, grid_thw)                       # [tokens, 3584] float32

Layout (each module's docstring names the notebook that explains it):
    spec           the whole forward in plain NumPy: the code to read and port from
    families       the family table: everything that differs between the towers, one entry each
    config, weights, preprocessing, bridge    checkpoints in, pixels in, tokens out to the LLM
    grid           grid_thw, checked once
    stages         the names of the stages a forward reports (taps, compare)
    engine/        the fast engine: its kernels and index builders, the kernel table, the block, attention, threads
    encoder        VisionEncoder: the engine's forward, and trace
    backend        NumPy, CuPy, the strict stand-in
    tools/         taps and compare, the bug zoo, precision, the transformers oracle, bench, the CLI, the course
"""

from . import spec
from .backend import Backend, get_backend
from .config import PRESETS, VisionConfig, preset_config, read_config
from .encoder import VisionEncoder, load_encoder
from .errors import BackendError, CheckpointError, ConfigError, ImageError, InputError, QvlearnError
from .preprocessing import MAX_PIXELS, MIN_PIXELS, preprocess, smart_resize
from .stages import STAGES
from .weights import load_weights, save_random_checkpoint

__version__ = "0.1.0"

__all__ = [
    "Backend", "BackendError", "CheckpointError", "ConfigError", "ImageError", "InputError", "MAX_PIXELS",
    "MIN_PIXELS", "PRESETS", "QvlearnError", "STAGES", "VisionConfig", "VisionEncoder", "get_backend",
    "load_encoder", "load_weights", "preprocess", "preset_config", "read_config", "save_random_checkpoint",
    "smart_resize", "spec", "__version__",
]
