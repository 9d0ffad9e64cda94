"""my_encoder.patch_embed: functions kept from a notebook by qvlearn.tools.course.keep. Edit them in the notebook
and run its cells again; this file is rewritten."""


import numpy as np


def patch_embed(pixel_values, conv_weight, bias=None):
    """[N, C*T*P*P] pixel rows -> [N, D]: the Conv3d kernel (D, C, T, P, P) as a (D, C*T*P*P) matrix, one matmul.
    (Qwen2/2.5-VL have no bias; the third generation, notebook 13, has one.)"""
    out = pixel_values @ conv_weight.reshape(conv_weight.shape[0], -1).T
    return out if bias is None else out + bias
