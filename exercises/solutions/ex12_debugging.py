"""Solutions to the exercises 12 · debugging a port (notebooks/12_debugging_a_port.ipynb)."""

import numpy as np


def scale_error(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return abs(float(np.sum(a * b) / np.sum(b * b)) - 1.0)


def locate_bug(port_taps, golden_taps):
    from qvlearn.tools.taps import compare_taps

    return next(r.name for r in compare_taps(port_taps, golden_taps) if not r.ok)
