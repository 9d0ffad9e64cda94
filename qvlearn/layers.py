"""Linear layers and activations.

Explained in ``notebooks/05_norms_and_activations.ipynb``.

Weights are stored as the checkpoints store them, ``(out, in)``: ``y = x @ W.T + b``.
"""

from __future__ import annotations

import math

from array_api_compat import array_namespace

from .backend import erf, exp_, supports_out


def linear(x, weight, bias=None):
    """``[N, in] @ [in, out] -> [N, out]`` (+ bias)."""
    y = x @ weight.T
    if bias is not None:
        y += bias
    return y


def _x_sigmoid(x, alpha: float):
    """``x * sigmoid(alpha * x)`` = ``x / (1 + exp(-alpha x))``, with one temporary updated in place
    where the backend allows it (these run on the widest activations of the tower)."""
    xp = array_namespace(x)
    t = exp_(x * (-alpha))  # exp(-alpha x)
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


def gelu_tanh(x):
    """The tanh approximation of GELU (``gelu_pytorch_tanh``); about 1e-3 away from the exact one."""
    xp = array_namespace(x)
    return 0.5 * x * (1.0 + xp.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x * x * x)))


ACTIVATIONS = {"quick_gelu": quick_gelu, "silu": silu, "gelu": gelu, "gelu_pytorch_tanh": gelu_tanh}
