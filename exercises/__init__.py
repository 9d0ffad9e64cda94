"""qvlearn's exercises: stubs in ``exercises/exNN_*.py``, checkers in :mod:`exercises.checks`,
solutions in ``exercises/solutions/``. Run ``python -m exercises`` (see exercises/README.md)."""
