"""Low-precision experiments on the float32 encoder: bf16 weights, and bf16/fp16 activations emulated
with ``ml_dtypes`` (values rounded to the narrow type, stored back as float32).

Explained in ``notebooks/11_precision_lab.ipynb``. NumPy backend only; never used by the forward itself.

The emulation mirrors what a half-precision GPU port does: every linear layer (the patch embedding, qkv,
proj, MLP, merger) takes inputs rounded to the narrow type and returns a result rounded to it (the
accumulation itself stays float32, like tensor cores), and the residual stream is stored rounded after
every block; norm reductions, softmax and the rotary math stay in float32, as in transformers.
"""

from __future__ import annotations

from contextlib import contextmanager

import ml_dtypes
import numpy as np

DTYPES = {"bfloat16": ml_dtypes.bfloat16, "float16": np.float16}


def round_to(x: np.ndarray, dtype: str) -> np.ndarray:
    """Round float32 values to ``dtype`` (bfloat16/float16) and back: overflow becomes +-inf."""
    with np.errstate(over="ignore"):
        return np.asarray(x, np.float32).astype(DTYPES[dtype]).astype(np.float32)


def round_weights(weights: dict, dtype: str) -> dict:
    """Every tensor of a weight dict rounded to ``dtype`` (a checkpoint stored in bf16, say)."""
    return {k: round_to(v, dtype) for k, v in weights.items()}


@contextmanager
def emulate_activations(dtype: str):
    """Within the block, qvlearn's forward stores activations in ``dtype`` (see the module docstring)."""
    from . import attention, block, encoder, layers, merger

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    original_linear, original_block, original_embed = layers.linear, encoder.vision_block, encoder.patch_embed

    def linear(x, weight, bias=None):
        return round_to(original_linear(round_to(x, dtype), weight, bias), dtype)

    def vision_block(*args, **kwargs):
        return round_to(original_block(*args, **kwargs), dtype)

    def patch_embed(pixel_values, weight):
        return round_to(original_embed(round_to(pixel_values, dtype), weight), dtype)

    patched = [(attention, "linear", linear), (block, "linear", linear), (merger, "linear", linear),
               (encoder, "vision_block", vision_block), (encoder, "patch_embed", patch_embed)]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patched]
    try:
        for module, name, replacement in patched:
            setattr(module, name, replacement)
        yield
    finally:
        for module, name, value in saved:
            setattr(module, name, value)
