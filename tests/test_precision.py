"""The precision emulation: restores the float32 forward, and rounds like the real narrow types."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

import qvlearn
from qvlearn.check import rel_error
from qvlearn.precision import emulate_activations, round_to, round_weights


def test_round_to_matches_the_narrow_types():
    x = np.array([1.0, 1 + 2 ** -9, 70000.0, -3.14159], np.float32)
    np.testing.assert_array_equal(round_to(x, "bfloat16"), x.astype(ml_dtypes.bfloat16).astype(np.float32))
    assert np.isinf(round_to(x, "float16")[2])  # fp16 overflows above 65504


def test_emulation_changes_results_and_is_undone(checkpoint, mixed_batch):
    enc = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl"))
    exact = enc(*mixed_batch)
    with emulate_activations("bfloat16"):
        bf16 = enc(*mixed_batch)
    again = enc(*mixed_batch)
    np.testing.assert_array_equal(again, exact)
    assert 1e-4 < rel_error(bf16, exact) < 5e-2
    with pytest.raises(ValueError, match="dtype must be one of"):
        with emulate_activations("int8"):
            pass
    rounded = qvlearn.VisionEncoder(enc.config, round_weights(qvlearn.load_weights(checkpoint("tiny-qwen2.5-vl", dtype="float32"),
                                                                                    enc.config), "bfloat16"))
    assert rounded(*mixed_batch).dtype == np.float32
