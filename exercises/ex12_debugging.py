"""Exercises 12 · debugging a port (notebooks/12_debugging_a_port.ipynb).

Write each function, then check it:  python -m exercises 12
Solutions: exercises/solutions/ex12_debugging.py (try first!)
"""


def scale_error(a, b):
    """The systematic scale error of ``a`` against the reference ``b`` (same shape): ``|<a, b> / <b, b> - 1|``,
    in float64. A wrong norm eps shows here long before any max-based error does."""
    raise NotImplementedError


def locate_bug(port_taps, golden_taps):
    """Two tap dicts (stage name -> array) of the same forward: a port's and the golden one. Return the name of the
    stage where the port's bug lives: the first stage, in forward order, beyond compare's float32 tolerance (use
    qvlearn.tools.taps, or compare the arrays yourself)."""
    raise NotImplementedError
