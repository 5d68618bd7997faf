# Two commands for a fresh machine (see README.md): `make book` and `make test`.
# `make test` creates or reuses the virtual environment .venv (the library with torch, and the test tools);
# `make book` uses .venv-book, which holds only Jupyter Book: the build shows the outputs stored in the notebooks
# and imports nothing of the library, so it needs neither torch (about 6 GB) nor the library itself.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BOOK_VENV  := .venv-book
BOOK_PY    := $(BOOK_VENV)/bin/python
BOOK_STAMP := $(BOOK_VENV)/.installed
# The book extra of pyproject.toml, which pip cannot install without the library (tests/test_publish.py keeps the two
# the same).
BOOK_REQUIREMENT := jupyter-book>=1.0.3,<2

.PHONY: lab book test unit-test notebook-test book-test lint lint-workflows notebooks bench pretrained chromium \
	shellcheck clean test-floors

# The environment: the library (editable) with the book and test extras.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[book,test]"
	touch $@

# The book's build environment: Jupyter Book alone (it brings Sphinx, MyST-NB, the book theme and
# sphinxcontrib-bibtex; the book's own extension, book/_ext, imports nothing else). About 270 MB.
$(BOOK_STAMP): Makefile
	test -x $(BOOK_PY) || $(PYTHON) -m venv $(BOOK_VENV)
	$(BOOK_PY) -m pip install --quiet --upgrade pip
	$(BOOK_PY) -m pip install --quiet "$(BOOK_REQUIREMENT)"
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
book: $(BOOK_STAMP) node_modules/mathjax/es5/tex-chtml.js
	PYTHON=$(BOOK_PY) bash scripts/build_book.sh

## All tests: library unit tests, lint, notebooks in smoke mode (nbval), book build and browser check.
test: $(STAMP) node_modules/mathjax/es5/tex-chtml.js chromium shellcheck lint-workflows
	$(PY) -m pytest tests
	rm -rf notebooks/runs-smoke
	SAAE_FAST=1 $(PY) -m pytest --nbval-lax -p no:cacheprovider notebooks

# Debian's Chromium for the browser test (never a browser downloaded by Playwright).
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium is missing: install Debian's chromium package (sudo apt-get install chromium) for the browser test"; fi; }

# ShellCheck, which actionlint runs on the workflows' run: scripts (GitHub's Ubuntu runners come with it).
shellcheck:
	@command -v shellcheck >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq shellcheck; \
	  else echo "shellcheck is missing: install it (sudo apt-get install shellcheck) so that actionlint checks the workflows' scripts"; fi; }

## Check the GitHub Actions workflows (.github/workflows) with actionlint; any finding fails.
lint-workflows: $(STAMP) shellcheck
	$(VENV)/bin/actionlint

## Re-execute all five chapters in full mode (real training), storing their outputs.
# Trained models go to runs/ (fresh for every full run), where `make bench` finds and reuses them.
notebooks: $(STAMP)
	rm -rf runs
	SAAE_RUNS_DIR=$(CURDIR)/runs $(PY) scripts/run_notebooks.py
	$(VENV)/bin/nbstripout --keep-output --keep-count notebooks/0*.ipynb

## Speed and quality benchmarks (results in benchmarks/results/).
bench: $(STAMP)
	SAAE_RUNS_DIR=$(CURDIR)/runs $(PY) -m benchmarks.bench

## Train the models listed in pretrained/REGISTRY.json (side by side, one per core, resumable) and export them to pretrained/NAME.
pretrained: $(STAMP)
	$(PY) scripts/make_pretrained.py

lint: $(STAMP)
	$(VENV)/bin/ruff check saae_lib scripts tests notebooks

clean:
	rm -rf _build runs notebooks/runs-smoke book/_static/mathjax

## Unit tests on the lowest Python and dependency versions pyproject.toml allows (throwaway venv, ~3 GB download).
test-floors:
	bash scripts/test_floors.sh
