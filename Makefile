# qvlearn: two commands do all set-up on a fresh machine.
#   make lab    create .venv, install everything, open the course in JupyterLab
#   make test   create .venv, install everything, then run its phases (each one even if an earlier one failed, and
#               one summary line per phase at the end): ruff; the test suite and every notebook; every notebook
#               under other numerics; the test suite under other numerics against the newest transformers
#               (NEXT_TRANSFORMERS); the course site built and opened in headless chromium; a check that the run
#               left the tree unchanged
# Other targets: make setup, make notebooks (re-execute every notebook in a fresh kernel), make site (the course as
#   a static website in build/site/), make test-next,
#   make test-slow (the tests marked slow, by hand), make conformance (llama.cpp and mlx-vlm checked stage by
#   stage, mistral.rs end to end, all timed: docs/conformance.md; about 40 minutes on 2 cores from a fresh clone, not
#   part of make test), make conformance-quick (the tiny towers on all three, verdicts checked against the
#   committed results).

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch: the CPU-only wheel. On Linux it comes from the PyTorch project's CPU-only index: PyPI's Linux wheel of the
# same version pulls 19 CUDA packages (several GB). pip also takes it from a local wheel cache or --find-links, so
# set-up works where that index cannot be reached; failing both, it falls back to PyPI's wheel and says so.
# macOS: PyPI's wheel, which is the CPU (and Apple GPU) build.
TORCH       := torch==2.13.0
TORCH_INDEX ?= $(if $(filter Linux,$(shell uname -s)),https://download.pytorch.org/whl/cpu,)
# The reference the project checks against (constraints.txt), and the newest 5.x, checked by the test suite too.
NEXT_TRANSFORMERS ?= 5.24.0
NEXT   := $(VENV)/transformers-$(NEXT_TRANSFORMERS)
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with=tests/nbval_sanitize.cfg --nbval-cell-timeout=600
# "Another machine" on this one: OpenBLAS's Sandybridge kernels instead of the CPU's own, MKL's compatible
# code path, torch's portable (non-AVX) kernels, and one thread everywhere. Every stored notebook output must
# survive it: a stored float digit that depends on the BLAS or the thread count fails here.
OTHER_NUMERICS := OPENBLAS_CORETYPE=Sandybridge OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
                  MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=default
LAB_ARGS ?=
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_VERBOSITY := error
export PYTHONHASHSEED := 0

.PHONY: setup lab test test-lint test-suite test-notebooks-other test-tree test-next test-slow notebooks clean \
        conformance conformance-quick gpu-wheels gpu-check gpu-check-dry site test-site browser

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null || { \
	  echo "make: qvlearn needs Python 3.11, 3.12 or 3.13 (numpy 2.4 and transformers 5.23 need >= 3.11);"; \
	  echo "      $(PYTHON) is $$($(PYTHON) --version 2>&1 || echo 'not found'). Run: make $(MAKECMDGOALS) PYTHON=python3.11"; \
	  exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --no-deps $(TORCH) $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX) --retries 2) || { \
	  echo "make: the CPU-only torch index could not be reached: installing PyPI's $(TORCH) (on Linux a CUDA build)"; \
	  $(PY) -m pip install --quiet --no-deps $(TORCH); }
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $@

setup: $(VENV)/.installed

lab: setup
	@if [ "$$(id -u)" = 0 ] && ! echo "$(LAB_ARGS)" | grep -q -- --allow-root; then \
	  echo "make lab: JupyterLab refuses to run as root. In a container or a cloud notebook, run:"; \
	  echo "    make lab LAB_ARGS=\"--allow-root --ip=0.0.0.0 --no-browser\""; \
	  echo "and open the printed http://127.0.0.1:8888/lab?token=... address. Elsewhere, run make lab as a normal user."; \
	  exit 2; fi
	$(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" --LabApp.default_url=/lab/tree/notebooks/00_tour.ipynb $(LAB_ARGS)

# make test's phases: each runs even when an earlier one failed; tools/phases.py ends with one line per phase.
TEST_PHASES := test-lint test-suite test-notebooks-other test-next test-site gpu-check-dry test-tree

test: setup
	@$(PY) tools/tree_state.py save
	@$(PY) tools/phases.py $(TEST_PHASES)

test-lint: setup
	$(PY) -m ruff check qvlearn tests tools exercises

test-suite: setup
	$(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests notebooks $(NBVAL)

test-notebooks-other: setup
	@echo "== every notebook again under other numerics: $(OTHER_NUMERICS)"
	$(OTHER_NUMERICS) $(PY) -m pytest -q -p no:cacheprovider notebooks $(NBVAL)

test-tree: setup
	$(PY) tools/tree_state.py check

# The test suite (parity, preprocessing, bridge, taps: everything but the notebooks) against the newest transformers
# 5.x, under the other numerics: the same venv with transformers $(NEXT_TRANSFORMERS) laid over it (its requirements
# are 5.23.0's, all met). A test whose verdict depends on the BLAS, the CPU's kernels or the thread count fails here.
$(NEXT)/.installed: $(VENV)/.installed
	$(PY) -m pip install --quiet --no-deps --target $(NEXT) transformers==$(NEXT_TRANSFORMERS)
	touch $@

test-next: $(NEXT)/.installed
	@echo "== the test suite again against transformers $(NEXT_TRANSFORMERS), under other numerics: $(OTHER_NUMERICS)"
	$(OTHER_NUMERICS) PYTHONPATH=$(CURDIR)/$(NEXT) QVLEARN_EXPECT_TRANSFORMERS=$(NEXT_TRANSFORMERS) \
	  $(PY) -m pytest -q -p no:cacheprovider -m "not slow" tests

# llama.cpp's and mlx-vlm's Qwen-VL towers against transformers, stage by stage, as released and after each of the
# patches in tools/conformance/patches/ and patches-mlxvlm/, mistral.rs's end to end, all timed: fetches llama.cpp's
# pinned source and the pinned mlx and mistralrs wheels from the package index into build/conformance/, rewrites
# docs/conformance.md, docs/conformance/results.json and docs/conformance/taps/. The released widths run mlx on Debian's OpenBLAS
# (apt-get install libopenblas0-pthread).
conformance: setup
	$(PY) tools/conformance/conformance.py

# The tiny towers on every runtime that runs them, no timing, llama.cpp as released and with its patches all at once
# (12 minutes on 2 cores from a fresh clone, after make setup): each verdict is checked against the
# committed docs/conformance/results.json (those at the float32 noise edge are not compared).
conformance-quick: setup
	$(PY) tools/conformance/conformance.py --quick

# The GPU path in one command (tools/gpu_check.py). gpu-wheels, on a CPU machine with network: the wheels a GPU machine
# may lack, in .whl/gpu/ (carried with the repository, at most 64 MiB). gpu-check, on the GPU machine, with its own
# python3 and no network: installs only what is missing from those wheels, runs its phases under their time limits
# and writes OUT/gpu_check.json and OUT/gpu_check.md. gpu-check-dry: the same script on the CPU with the strict
# stand-in in place of CuPy, in 60 s (a phase of make test, so the script cannot rot).
OUT ?= gpu-check
gpu-wheels:
	$(PYTHON) tools/gpu_check.py --download-wheels .whl/gpu

gpu-check:
	$(PYTHON) tools/gpu_check.py --out $(OUT)

gpu-check-dry: setup
	$(PY) tools/gpu_check.py --dry --out .cache/gpu-check-dry

# The tests marked slow (minutes each: the attention memory bound, the benchmark's subprocess smoke runs): by hand.
test-slow: setup
	$(PY) -m pytest -q -p no:cacheprovider -m slow tests

notebooks: setup
	$(PY) tools/regenerate_notebooks.py notebooks/*.ipynb

# The course as a static site in build/site/ (open build/site/index.html): Sphinx + myst-nb, offline, from the
# committed notebooks (not re-executed); tools/site.py says what it holds. A link that leaves the site stops it.
SITE ?= build/site
site: setup
	$(PY) tools/site.py --out $(SITE)

# The site built and opened page by page in headless chromium (tools/site_check.py): every page loads, every
# image is displayed, nothing is fetched over the network, no internal link is dead.
test-site: site browser
	$(PY) -m pytest -q -p no:cacheprovider tests/test_site_check.py
	$(PY) tools/site_check.py --site $(SITE)

# chromium and chromedriver for test-site: installed with apt-get when missing on Debian/Ubuntu as root (a CI
# machine); elsewhere tools/site_check.py says how to install them.
browser:
	@if ! command -v chromedriver >/dev/null || ! { command -v chromium || command -v chromium-browser || \
	     command -v google-chrome; } >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "make: installing Debian's chromium and chromium-driver for the site's browser check (apt-get)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver \
	      >/dev/null 2>&1 || { apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive \
	      apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null; } || \
	      echo "make: apt-get could not install chromium: test-site will say what is missing"; \
	  fi; fi

clean:
	rm -rf $(VENV) .pytest_cache
