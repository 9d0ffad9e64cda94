"""Linear layers and activations.

Explained in ``notebooks/05_norms_and_activations.ipynb``.

Weights are stored as the checkpoints store them, ``(out, in)``: ``y = x @ W.T + b``.
"""

from __future__ import annotations

import math

import numpy as np
from array_api_compat import array_namespace

from ..backend import LOG2_E, erf, exp2_, supports_out


def linear(x, weight, bias=None):
    """``[N, in] @ [in, out] -> [N, out]`` (+ bias)."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def _x_sigmoid(x, alpha: float):
    """``x * sigmoid(alpha * x)`` = ``x / (1 + exp(-alpha x))``, with one temporary updated in place
    where the backend allows it (these run on the widest activations of the tower). ``exp(-alpha x)`` is
    taken as ``2 ** (-alpha log2(e) x)``: NumPy's ``exp2`` is faster than its ``exp``. For very negative
    ``x`` it overflows to inf and ``x / inf`` is the correct limit, -0."""
    xp = array_namespace(x)
    with np.errstate(over="ignore"):
        t = exp2_(x * (-alpha * LOG2_E))  # exp(-alpha x)
        if supports_out(xp):
            t += 1.0
            return xp.divide(x, t, out=t)
        return x / (1.0 + t)


def quick_gelu(x):
    """QuickGELU of Qwen2-VL's MLP: ``x * sigmoid(1.702 x)``."""
    return _x_sigmoid(x, 1.702)


def silu(x):
    """SiLU (swish) of Qwen2.5-VL's gated MLP: ``x * sigmoid(x)``."""
    return _x_sigmoid(x, 1.0)


def gelu(x):
    """Exact GELU of the merger (``nn.GELU()``): ``x/2 * (1 + erf(x / sqrt(2)))``. Not the tanh form."""
    return x * 0.5 * (1.0 + erf(x * (1.0 / math.sqrt(2.0))))


_GELU_TANH_C = math.sqrt(2.0 / math.pi)


def gelu_tanh(x):
    """The tanh approximation of GELU (``gelu_pytorch_tanh``); about 1e-3 away from the exact one:
    ``x/2 * (1 + tanh(u))``, ``u = sqrt(2/pi) (x + 0.044715 x^3)``.

    Computed as ``x * sigmoid(2u)`` = ``x / (1 + exp(-2u))``, the same function (``(1 + tanh u) / 2 =
    sigmoid(2u)``), in one temporary updated in place: 2.5x faster than the tanh form here, and without its
    cancellation in ``1 + tanh(u)`` for negative ``x`` (relative error 1e-6 instead of 1e-4 where the output
    is tiny)."""
    xp = array_namespace(x)
    a, b = -2.0 * _GELU_TANH_C * LOG2_E, -2.0 * _GELU_TANH_C * 0.044715 * LOG2_E
    with np.errstate(over="ignore"):
        if supports_out(xp):
            t = x * x
            t *= b
            t += a
            t *= x  # -2u log2(e)
            t = exp2_(t)  # exp(-2u)
            t += 1.0
            return xp.divide(x, t, out=t)
        return x / (1.0 + exp2_(x * (a + b * x * x)))


ACTIVATIONS = {"quick_gelu": quick_gelu, "silu": silu, "gelu": gelu, "gelu_pytorch_tanh": gelu_tanh}
