"""The precision emulation: a kernel table of its own that leaves the engine's alone, and rounds like the real
narrow types."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

import qvlearn
from qvlearn.tools.check import rel_error
from qvlearn.tools.precision import emulated_kernels, round_to, round_weights


def test_round_to_matches_the_narrow_types():
    x = np.array([1.0, 1 + 2 ** -9, 70000.0, -3.14159], np.float32)
    np.testing.assert_array_equal(round_to(x, "bfloat16"), x.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert np.isinf(round_to(x, "float16")[2])  # fp16 overflows above 65504


def test_emulation_changes_results_and_leaves_the_engine_alone(checkpoint, mixed_batch):
    enc = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl"))
    exact = enc(*mixed_batch)
    emulated = enc.with_kernels(emulated_kernels("bfloat16"))
    bf16 = emulated(*mixed_batch)
    np.testing.assert_array_equal(enc(*mixed_batch), exact)  # the original encoder still runs the engine's table
    assert 1e-4 < rel_error(bf16, exact) < 5e-2
    # the merger's last linear returns bf16 values: every output is exactly representable in bf16
    np.testing.assert_array_equal(bf16, round_to(bf16, "bfloat16"))
    assert not np.array_equal(exact, round_to(exact, "bfloat16"))  # ... which the float32 forward's are not
    with pytest.raises(ValueError, match="dtype must be one of"):
        emulated_kernels("int8")


def test_round_weights_rounds_every_value_as_torch_does(checkpoint):
    path = checkpoint("tiny-qwen2.5-vl", dtype="float32")
    config = qvlearn.read_config(path)
    weights = qvlearn.load_weights(path, config)
    for dtype, torch_dtype in (("bfloat16", torch.bfloat16), ("float16", torch.float16)):
        rounded = round_weights(weights, dtype)
        assert rounded.keys() == weights.keys()
        changed = 0
        for name, value in weights.items():
            expected = torch.from_numpy(np.ascontiguousarray(value)).to(torch_dtype).to(torch.float32).numpy()
            np.testing.assert_array_equal(rounded[name], expected, err_msg=f"{dtype} {name}")
            assert rounded[name].dtype == np.float32
            changed += int(not np.array_equal(rounded[name], value))
        assert changed == len(weights)  # random float32 weights: every tensor loses bits
    encoder = qvlearn.VisionEncoder(config, round_weights(weights, "bfloat16"))
    assert encoder.weights_dtype == "float32"
