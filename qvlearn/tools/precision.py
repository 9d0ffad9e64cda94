"""Low-precision experiments on the float32 encoder: bf16 weights, and bf16/fp16 activations emulated
with ``ml_dtypes`` (values rounded to the narrow type, stored back as float32).

Explained in ``notebooks/11_precision_lab.ipynb``. NumPy backend only; a kernel table of its own
(:func:`emulated_kernels`), never used by the engine's default forward.

The emulation mirrors what a half-precision GPU port does: every linear layer (the patch embedding, qkv,
proj, MLP, merger) takes inputs rounded to the narrow type and returns a result rounded to it (the
accumulation itself stays float32, like tensor cores), and the residual stream is stored rounded after
every block; norm reductions, softmax and the rotary math stay in float32, as in transformers.
"""

from __future__ import annotations

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


def emulated_kernels(dtype: str, base=None):
    """The kernel table ``base`` (the engine's by default) storing activations in ``dtype`` (bfloat16 or float16):
    every ``linear`` and the patch embedding take inputs rounded to ``dtype`` and return results rounded to it, and
    each block's output (the residual stream, ``finish``) is stored rounded (see the module docstring). Use it as
    ``encoder.with_kernels(emulated_kernels("bfloat16"))``."""
    from ..engine.kernels import KERNELS

    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
    base = KERNELS if base is None else base

    def linear(x, weight, bias=None):
        return round_to(base.linear(round_to(x, dtype), weight, bias), dtype)

    def patch_embed(pixel_values, weight):
        return round_to(base.patch_embed(round_to(pixel_values, dtype), weight), dtype)

    def finish(*args, **kwargs):
        return round_to(base.finish(*args, **kwargs), dtype)

    return base.replace(linear=linear, patch_embed=patch_embed, finish=finish)
