# qvlearn: two commands do all set-up on a fresh machine.
#   make lab    create .venv, install everything, open the course in JupyterLab
#   make test   create .venv, install everything, run the whole test suite (tests + every notebook)
# Other targets: make setup, make notebooks (re-execute every notebook in a fresh kernel), make bench.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
NBVAL  := --nbval --nbval-current-env --nbval-sanitize-with=tests/nbval_sanitize.cfg --nbval-cell-timeout=600
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
	$(VENV)/bin/jupyter lab notebooks/00_tour.ipynb

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests notebooks $(NBVAL)

notebooks: setup
	$(PY) tools/regenerate_notebooks.py notebooks/*.ipynb

clean:
	rm -rf $(VENV) .pytest_cache
