# Two commands for a fresh machine (see README.md): `make book` and `make test`.
# Each creates or reuses the virtual environment .venv and installs what it needs.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: lab book test unit-test notebook-test book-test lint notebooks bench pretrained chromium clean test-floors

# The environment: the library (editable) with the book and test extras.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test]"
	touch $@

node_modules/mathjax/es5/tex-chtml.js: package.json package-lock.json
	npm ci --no-audit --no-fund

# JupyterLab will not start as root without --allow-root; containers and many cloud VMs run as root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)

## Open the chapters in JupyterLab (installs it into .venv the first time); LAB_ARGS="--no-browser ..." passes options.
lab: $(STAMP)
	$(PY) -m pip install --quiet -e ".[jupyter]"
	$(VENV)/bin/jupyter lab notebooks $(ROOT_FLAG) $(LAB_ARGS)

## Build the book into _build/html (shows the outputs stored in the notebooks).
book: $(STAMP) node_modules/mathjax/es5/tex-chtml.js
	PYTHON=$(PY) bash scripts/build_book.sh

## All tests: library unit tests, lint, notebooks in smoke mode (nbval), book build and browser check.
test: $(STAMP) node_modules/mathjax/es5/tex-chtml.js chromium
	$(PY) -m pytest tests
	rm -rf notebooks/runs-smoke
	SAAE_FAST=1 $(PY) -m pytest --nbval-lax -p no:cacheprovider notebooks

# Debian's Chromium for the browser test (never a browser downloaded by Playwright).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing: install Debian's chromium package (sudo apt-get install chromium) for the browser test"; fi; }

## Re-execute all four chapters in full mode (real training), storing their outputs.
# Trained models go to runs/ (fresh for every full run), where `make bench` finds and reuses them.
notebooks: $(STAMP)
	rm -rf runs
	SAAE_RUNS_DIR=$(CURDIR)/runs $(PY) scripts/run_notebooks.py
	$(VENV)/bin/nbstripout --keep-output --keep-count notebooks/0*.ipynb

## Speed and quality benchmarks (results in benchmarks/results/).
bench: $(STAMP)
	SAAE_RUNS_DIR=$(CURDIR)/runs $(PY) -m benchmarks.bench

## Train the models listed in pretrained/REGISTRY.json (side by side, resumable) and export them to pretrained/NAME.
pretrained: $(STAMP)
	$(PY) scripts/make_pretrained.py

lint: $(STAMP)
	$(VENV)/bin/ruff check saae_lib scripts tests notebooks

clean:
	rm -rf _build runs notebooks/runs-smoke book/_static/mathjax

## Unit tests on the lowest Python and dependency versions pyproject.toml allows (throwaway venv, ~3 GB download).
test-floors:
	bash scripts/test_floors.sh
