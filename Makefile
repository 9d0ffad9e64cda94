# qvlearn: two commands do all set-up on a fresh machine.
#   make lab    create .venv, install everything, open the course in JupyterLab
#   make test   create .venv, install everything, run the whole test suite (tests + every notebook), then
#               every notebook again under other numerics, and check that the run left the tree unchanged
# Other targets: make setup, make notebooks (re-execute every notebook in a fresh kernel), make bench.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
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

.PHONY: setup lab test notebooks clean

$(VENV)/.installed: requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
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

test: setup
	$(PY) tools/tree_state.py save
	$(PY) -m pytest -q -p no:cacheprovider tests notebooks $(NBVAL)
	@echo "== every notebook again under other numerics: $(OTHER_NUMERICS)"
	$(OTHER_NUMERICS) $(PY) -m pytest -q -p no:cacheprovider notebooks $(NBVAL)
	$(PY) tools/tree_state.py check

notebooks: setup
	$(PY) tools/regenerate_notebooks.py notebooks/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache
