"""``python -m qvlearn.bench``: the benchmark against transformers (:mod:`qvlearn.tools.bench`)."""

import sys

from .tools.bench import main

if __name__ == "__main__":
    sys.exit(main())
