"""my_encoder.layers: functions kept from a notebook by qvlearn.tools.course.keep. Edit them in the notebook
and run its cells again; this file is rewritten."""


import math

import numpy as np
from scipy.special import erf


def layer_norm(x, weight, bias, eps=1e-6):
    mu = x.mean(axis=-1, keepdims=True)                       # [N, 1]
    var = ((x - mu) ** 2).mean(axis=-1, keepdims=True)        # biased variance (divide by D, not D-1)
    return (x - mu) / np.sqrt(var + eps) * weight + bias


def rms_norm(x, weight, eps=1e-6):
    mean_square = (x * x).mean(axis=-1, keepdims=True)        # no centring
    return x / np.sqrt(mean_square + eps) * weight            # no bias


def sigmoid(z):
    with np.errstate(over="ignore"):        # exp(-z) overflows to inf for very negative z: 1 / inf = 0, right
        return 1 / (1 + np.exp(-z))


def quick_gelu(z):                  # Qwen2-VL MLP
    return z * sigmoid(1.702 * z)


def silu(z):                        # Qwen2.5-VL gated MLP
    return z * sigmoid(z)


def gelu(z):                        # the merger: exact, with the error function
    return 0.5 * z * (1 + erf(z / math.sqrt(2)))


def gelu_tanh(z):                   # the tanh approximation (not used by Qwen2/2.5-VL)
    return 0.5 * z * (1 + np.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))


def linear(x, w, name):                                   # a Linear stores [out, in]: x @ W.T + b
    return x @ w[f"{name}.weight"].T + w[f"{name}.bias"]


def mlp_fc(x, w, act=quick_gelu, names=("fc1", "fc2")):  # Qwen2-VL: fc2(quick_gelu(fc1(x)))
    return linear(act(linear(x, w, names[0])), w, names[1])                    # [N, 1280] -> [N, 5120] -> [N, 1280]


def mlp_gated(x, w):                                      # Qwen2.5-VL: down(silu(gate(x)) * up(x))
    gate, up = linear(x, w, "gate_proj"), linear(x, w, "up_proj")              # [N, 3420] each
    return linear(silu(gate) * up, w, "down_proj")                             # -> [N, 1280]
