"""The GPU code path without a GPU: the whole encoder under array_api_strict on a virtual non-CPU
device, where any NumPy call on backend data or implicit host transfer raises. Real CuPy tests are
marked ``gpu`` and run where CuPy finds a GPU."""

from __future__ import annotations

import array_api_strict
import numpy as np
import pytest
from scipy.special import erf as scipy_erf

import qvlearn
from qvlearn.backend import erf, get_backend, is_strict_array
from qvlearn.tools.check import rel_error


@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-qwen2.5-vl"])
def test_strict_device_runs_the_whole_encoder(checkpoint, mixed_batch, preset):
    pixel_values, grid_thw = mixed_batch
    strict = get_backend("strict")
    enc = qvlearn.load_encoder(checkpoint(preset), backend="strict")
    stages = {}

    def tap(name, value):
        stages[name] = value

    out = enc(pixel_values, grid_thw, tap=tap)
    # output stays on the device, in the backend's namespace: no silent fallback to NumPy
    assert is_strict_array(out)
    assert out.device == strict.device
    assert out.dtype == array_api_strict.float32
    for name in ("patch_embeds", "cos", "blocks.0", "merger", "embeddings"):
        assert is_strict_array(stages[name]) and stages[name].device == strict.device, name
    with pytest.raises(RuntimeError):
        np.asarray(out)  # host transfer must be explicit
    reference = qvlearn.load_encoder(checkpoint(preset))(pixel_values, grid_thw)
    assert rel_error(strict.to_numpy(out), reference) < 1e-6


def test_strict_device_accepts_device_inputs(checkpoint, mixed_batch):
    pixel_values, grid_thw = mixed_batch
    strict = get_backend("strict")
    enc = qvlearn.load_encoder(checkpoint("tiny-qwen2.5-vl"), backend=strict)
    out = enc(strict.asarray(pixel_values), grid_thw)
    assert out.device == strict.device
    bad = pixel_values.copy()
    bad[0, 0] = np.nan
    with pytest.raises(qvlearn.InputError, match="NaN or Inf"):
        enc(strict.asarray(bad), grid_thw)


def test_backend_from_environment(monkeypatch):
    monkeypatch.setenv("QVLEARN_BACKEND", "strict")
    assert get_backend().name == "strict"
    monkeypatch.setenv("QVLEARN_BACKEND", "tpu")
    with pytest.raises(qvlearn.BackendError, match="unknown backend 'tpu'"):
        get_backend()
    monkeypatch.delenv("QVLEARN_BACKEND")
    assert get_backend().name == "numpy"


def test_cupy_backend_says_what_is_missing():
    try:
        import cupy  # noqa: F401

        cupy.zeros(1)
        pytest.skip("a working CuPy is installed")
    except Exception:
        pass
    with pytest.raises(qvlearn.BackendError, match="cupy backend (needs CuPy|is not usable)"):
        get_backend("cupy")


def test_rational_erf_is_float32_accurate():
    x = np.linspace(-6, 6, 200001, dtype=np.float32)
    strict = get_backend("strict")
    approx = strict.to_numpy(erf(strict.asarray(x)))
    assert approx.dtype == np.float32
    assert np.max(np.abs(approx - scipy_erf(x.astype(np.float64)))) < 5e-7
    assert erf(x).dtype == np.float32


@pytest.mark.gpu
@pytest.mark.parametrize("preset", ["tiny-qwen2-vl", "tiny-qwen2.5-vl"])
def test_cupy_matches_numpy(checkpoint, mixed_batch, preset):
    import cupy

    pixel_values, grid_thw = mixed_batch
    gpu = qvlearn.load_encoder(checkpoint(preset), backend="cupy")
    out = gpu(pixel_values, grid_thw)
    assert isinstance(out, cupy.ndarray) and out.dtype == cupy.float32
    reference = qvlearn.load_encoder(checkpoint(preset))(pixel_values, grid_thw)
    assert rel_error(cupy.asnumpy(out), reference) < 1e-5


def test_the_cupy_backend_names_its_package_or_what_to_install():
    from qvlearn.backend import Backend, cupy_package
    from qvlearn.errors import BackendError

    assert cupy_package({"cupy-cuda13x": "14.2.0"}) == "cupy-cuda13x 14.2.0"
    assert cupy_package({"cupy-cuda12x": "13.6.0", "numpy": "2.4.6"}) == "cupy-cuda12x 13.6.0"
    assert cupy_package({"numpy": "2.4.6"}) is None
    if cupy_package() is None:  # this machine: one line that says what to install
        with pytest.raises(BackendError) as info:
            Backend("cupy")
        message = str(info.value)
        assert "\n" not in message and "pip install cupy-cuda12x" in message and "cupy-cuda13x" in message
    assert get_backend("numpy").describe() == "numpy (CPU)"
