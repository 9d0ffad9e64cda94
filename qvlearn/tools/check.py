"""Numerical comparison used by tests, notebooks and tools: one metric, one assertion.

The project's tolerance metric is the relative error ``max |ours - ref| / max |ref|``.
"""

from __future__ import annotations

import numpy as np


def rel_error(ours, ref) -> float:
    """max |ours - ref| / max |ref|: the project's tolerance metric."""
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if ours.shape != ref.shape:
        raise AssertionError(f"shape mismatch: {ours.shape} vs reference {ref.shape}")
    scale = np.max(np.abs(ref))
    return float(np.max(np.abs(ours - ref)) / (scale if scale > 0 else 1.0))


def assert_close(ours, ref, rtol: float = 1e-5, name: str = "value") -> float:
    """Raise unless ``max |ours - ref| / max |ref| <= rtol``; returns the relative error."""
    err = rel_error(ours, ref)
    if not err <= rtol:
        raise AssertionError(f"{name}: relative error {err:.3e} exceeds {rtol:.0e}")
    return err


def check_close(ours, ref, rtol: float = 1e-5, name: str = "value") -> None:
    """:func:`assert_close`, then print one stable line naming the tolerance that was met (notebooks).

    Returns nothing on purpose: a cell ending in ``check_close(...)`` would otherwise display the error
    itself, whose last digits depend on the BLAS kernel and thread count, and nbval would compare them.
    """
    assert_close(ours, ref, rtol=rtol, name=name)
    print(f"{name}: relative error <= {rtol:.0e}")
