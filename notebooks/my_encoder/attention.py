"""my_encoder.attention: functions kept from a notebook by qvlearn.tools.course.keep. Edit them in the notebook
and run its cells again; this file is rewritten."""


import numpy as np

from my_encoder.layers import layer_norm, mlp_fc, mlp_gated, rms_norm
from my_encoder.rope import apply_rotary


def segment_attention(q, k, v, cu, scale):                # q, k, v [N, heads, d]
    out = np.empty_like(q)
    for a, b in zip(cu[:-1], cu[1:]):                          # one plain attention per segment
        qs, ks, vs = (t[a:b].transpose(1, 0, 2) for t in (q, k, v))   # [heads, L, d]
        s = qs @ ks.transpose(0, 2, 1) * scale                 # [heads, L, L] scores
        p = np.exp(s - s.max(axis=-1, keepdims=True))          # stable softmax over the segment's keys
        p /= p.sum(axis=-1, keepdims=True)
        out[a:b] = (p @ vs).transpose(1, 0, 2)
    return out


def attention(h, w, cos, sin, cu, heads):
    n, dim = h.shape
    qkv = (h @ w["attn.qkv.weight"].T + w["attn.qkv.bias"]).reshape(n, 3, heads, dim // heads)  # [q | k | v]
    q, k = apply_rotary(qkv[:, 0], cos, sin), apply_rotary(qkv[:, 1], cos, sin)               # RoPE, notebook 3
    mixed = segment_attention(q, k, qkv[:, 2], cu, (dim // heads) ** -0.5)
    return mixed.reshape(n, dim) @ w["attn.proj.weight"].T + w["attn.proj.bias"]             # output projection


def norm(x, w, name, rms):                                # notebook 5: RMSNorm (Qwen2.5-VL) or LayerNorm (Qwen2-VL)
    return rms_norm(x, w[f"{name}.weight"]) if rms else layer_norm(x, w[f"{name}.weight"], w[f"{name}.bias"])


def mlp(x, w, gated):                                    # notebook 5's MLPs; inside a block their weights are mlp.*
    inner = {k[len("mlp."):]: v for k, v in w.items() if k.startswith("mlp.")}
    return mlp_gated(x, inner) if gated else mlp_fc(x, inner)


def block(x, w, cos, sin, cu, heads, rms, gated):        # pre-norm, two residuals
    x = x + attention(norm(x, w, "norm1", rms), w, cos, sin, cu, heads)
    return x + mlp(norm(x, w, "norm2", rms), w, gated)
