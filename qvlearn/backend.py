"""One array backend: NumPy on the CPU, CuPy on a GPU, the same kernels.

Explained in ``notebooks/00_tour.ipynb`` and ``notebooks/08_whole_encoder.ipynb``.

Rules the kernels follow (so that one code path serves every backend):

* A kernel takes its namespace from its inputs, ``xp = array_namespace(x)``, and only uses the
  Python array API standard (``xp.matmul``, ``xp.reshape``, ``xp.permute_dims``, ``xp.concat`` ...).
  It never calls ``np.`` on backend data.
* Only this module creates backend arrays from host data and brings them back, explicitly:
  :meth:`Backend.asarray` (host -> device) and :meth:`Backend.to_numpy` (device -> host).
* Small integer metadata (position ids, ``cu_seqlens``, ``window_index``) is built on the host with
  NumPy and moved once.

Backends:

``numpy``  the default; float32 on the CPU.
``cupy``   the same kernels on an NVIDIA GPU (``pip install cupy-cuda12x``).
``strict`` ``array_api_strict`` on a virtual non-CPU device: a stand-in for a GPU used by the tests,
           where any NumPy call on backend data or implicit host transfer raises.

Choose with ``backend=`` or the environment variable ``QVLEARN_BACKEND``.
"""

from __future__ import annotations

import os

import numpy as np
from array_api_compat import (
    array_namespace,
    is_array_api_obj,
    is_array_api_strict_namespace,
    is_cupy_namespace,
    is_numpy_namespace,
)

from .errors import BackendError

BACKENDS = ("numpy", "cupy", "strict")
ENV_VAR = "QVLEARN_BACKEND"


class Backend:
    """An array namespace plus the two explicit host<->device moves."""

    def __init__(self, name: str):
        self.name = name
        if name == "numpy":
            import array_api_compat.numpy as xp

            self.xp, self.device = xp, "cpu"
        elif name == "cupy":
            package = cupy_package()
            if package is None:
                raise BackendError("the cupy backend needs CuPy, which is not installed: pip install cupy-cuda12x "
                                   "(CUDA 12 drivers) or cupy-cuda13x (CUDA 13; nvidia-smi shows which), or use "
                                   "backend='numpy' on a CPU")
            try:
                import array_api_compat.cupy as xp
                import cupy

                cupy.zeros(1, dtype=cupy.float32).sum().item()  # probe: importing works without a GPU
            except Exception as exc:  # ImportError, CUDA driver/runtime errors
                why = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
                raise BackendError(f"the cupy backend is not usable here: {package} is installed but finds no "
                                   f"usable NVIDIA GPU ({why}); check nvidia-smi, install the cupy-cuda12x / "
                                   "cupy-cuda13x that matches the driver's CUDA, or use backend='numpy'") from None
            self.xp, self.device, self._cupy = xp, cupy.cuda.Device(), cupy
            self.package = package
        elif name == "strict":
            try:
                import array_api_strict as xp
            except ImportError:
                raise BackendError("the strict backend (the test stand-in for a GPU) needs array-api-strict: "
                                   "pip install array-api-strict, or use backend='numpy'") from None

            self.xp, self.device = xp, xp.Device("device1")
        else:
            raise BackendError(f"unknown backend {name!r}; choose one of {BACKENDS} "
                               f"(argument backend= or ${ENV_VAR})")

    package = None
    """The distribution behind the backend: ``"cupy-cuda13x 14.2.0"`` for CuPy (:func:`cupy_package`)."""

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    def describe(self) -> str:
        """What runs the arrays: ``numpy (CPU)``, ``cupy-cuda13x 14.2.0 on NVIDIA H200 (CUDA runtime 13.0)``, ..."""
        if self.name == "cupy":
            runtime = self._cupy.cuda.runtime
            props = runtime.getDeviceProperties(self.device.id)
            gpu = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
            version = runtime.runtimeGetVersion()
            return f"{self.package} on {gpu} (CUDA runtime {version // 1000}.{version % 1000 // 10})"
        return "numpy (CPU)" if self.name == "numpy" else "array_api_strict on a virtual device (the GPU stand-in)"

    # -- the only two places where data crosses between host and backend ----------------------------
    def asarray(self, host, dtype=None):
        """Host (NumPy) data -> a backend array. A no-op for arrays already on this backend."""
        if self.owns(host):
            return host if dtype is None else self.xp.astype(host, dtype)
        host = np.asarray(host)
        if dtype is not None:
            host = host.astype(_numpy_dtype(dtype), copy=False)
        if self.name == "numpy":
            return host
        if self.name == "cupy":
            return self._cupy.asarray(host)
        return self.xp.asarray(host, device=self.device)

    def to_numpy(self, x) -> np.ndarray:
        """A backend array -> a NumPy array on the host (one explicit transfer)."""
        if isinstance(x, np.ndarray):
            return x
        if self.name == "cupy":
            return self._cupy.asnumpy(x)
        if self.name == "strict":
            return np.asarray(x.to_device(self.xp.Device("CPU_DEVICE")))
        raise BackendError(f"cannot bring {type(x).__name__} back to the host")

    def synchronize(self) -> None:
        """Wait until the device has finished the queued work (CuPy launches kernels asynchronously);
        a no-op on the CPU. Call it before reading a clock."""
        if self.name == "cupy":
            self._cupy.cuda.get_current_stream().synchronize()

    def owns(self, x) -> bool:
        """Whether ``x`` is an array of this backend (on its device)."""
        if self.name == "numpy":
            return isinstance(x, np.ndarray)
        if self.name == "cupy":
            return isinstance(x, self._cupy.ndarray)
        return is_strict_array(x) and x.device == self.device


CUPY_DISTRIBUTIONS = ("cupy-cuda13x", "cupy-cuda12x", "cupy-cuda11x", "cupy")


def cupy_package(installed=None) -> str | None:
    """Which CuPy distribution is installed, as ``"cupy-cuda12x 13.6.0"`` (the first of
    :data:`CUPY_DISTRIBUTIONS` found), or None. ``installed``: a name -> version mapping to look in instead of this
    environment's packages."""
    if installed is None:
        from importlib import metadata

        installed = {}
        for name in CUPY_DISTRIBUTIONS:
            try:
                installed[name] = metadata.version(name)
            except metadata.PackageNotFoundError:
                pass
    return next((f"{name} {installed[name]}" for name in CUPY_DISTRIBUTIONS if name in installed), None)


def is_strict_array(x) -> bool:
    """Whether ``x`` is an ``array_api_strict`` array (the test stand-in for a device array)."""
    return is_array_api_obj(x) and is_array_api_strict_namespace(array_namespace(x))


def _numpy_dtype(dtype):
    return np.dtype(str(dtype).rsplit(".", 1)[-1])


_CACHE: dict[str, Backend] = {}


def get_backend(backend: str | Backend | None = None) -> Backend:
    """Resolve ``backend`` (a name, a :class:`Backend`, or ``None`` for ``$QVLEARN_BACKEND`` / numpy)."""
    if isinstance(backend, Backend):
        return backend
    name = (backend or os.environ.get(ENV_VAR) or "numpy").strip().lower()
    if name not in _CACHE:
        _CACHE[name] = Backend(name)
    return _CACHE[name]


def supports_out(xp) -> bool:
    """Whether ``xp``'s elementwise functions take ``out=`` (NumPy and CuPy ufuncs do; the array API
    standard does not). Kernels use it to update large temporaries in place."""
    return is_numpy_namespace(xp) or is_cupy_namespace(xp)


def exp2_(x):
    """``2 ** x``, in place where the backend allows it. NumPy's and CuPy's ``exp2`` (not in the array API
    standard: elsewhere ``exp(x * ln 2)``) is faster than ``exp``: the exponent needs no change of base. The
    softmax uses it on scores already multiplied by ``log2(e)``."""
    xp = array_namespace(x)
    return xp.exp2(x, out=x) if supports_out(xp) else xp.exp(x * LN2)


LN2 = 0.6931471805599453
LOG2_E = 1.4426950408889634


def widen_bf16(bits):
    """bf16 weights kept as their uint16 bit patterns -> float32: the 16 bits become the top half of the
    float32 (exact, as torch's ``.float()``). Used to widen one block at a time."""
    xp = array_namespace(bits)
    if not supports_out(xp):
        raise BackendError("bf16-resident weights need the numpy or cupy backend")
    return (bits.astype(xp.uint32) << 16).view(xp.float32)


def erf(x):
    """The error function in ``x``'s namespace, float32 in, float32 out.

    NumPy has no ``erf`` and the array API standard neither: NumPy data goes to
    ``scipy.special.erf``, CuPy data to ``cupyx.scipy.special.erf``. Other namespaces (the strict
    test stand-in) use Eigen/XLA's float32 rational approximation, a few ulp from the exact value.
    """
    xp = array_namespace(x)
    if is_numpy_namespace(xp):
        from scipy.special import erf as _erf

        return _erf(x)
    if is_cupy_namespace(xp):
        from cupyx.scipy.special import erf as _erf

        return _erf(x)
    return _erf_rational(x, xp)


_ERF_ALPHA = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06, -5.69250639462346e-05,
              -7.34990630326855e-04, -2.95459980854025e-03, -1.60960333262415e-02)
_ERF_BETA = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03, -7.37332916720468e-03,
             -1.42647390514189e-02)


def _erf_rational(x, xp):
    x = xp.clip(x, -4.0, 4.0)
    x2 = x * x
    p = xp.full_like(x, _ERF_ALPHA[0])
    for a in _ERF_ALPHA[1:]:
        p = p * x2 + a
    q = xp.full_like(x, _ERF_BETA[0])
    for b in _ERF_BETA[1:]:
        q = q * x2 + b
    return x * p / q


__all__ = ["Backend", "BACKENDS", "cupy_package", "get_backend", "erf", "exp2_", "supports_out", "array_namespace"]
