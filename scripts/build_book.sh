#!/usr/bin/env bash
# Build the Jupyter Book into _build/html, failing on any Sphinx warning.
#
#   bash scripts/build_book.sh                        # uses .venv/bin/python, writes _build/html
#   PYTHON=.venv-book/bin/python bash scripts/build_book.sh   # what make book does (Jupyter Book alone)
#   PYTHON=python3 bash scripts/build_book.sh         # another Python that has jupyter-book 1.x
#   BOOK_OUTPUT=/tmp/x bash scripts/build_book.sh     # writes /tmp/x/_build/html instead
#
# Needs: a Python with jupyter-book 1.x, and npm (only the first time, to fetch MathJax).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
BOOK_OUTPUT="${BOOK_OUTPUT:-.}"

# MathJax 3 is served from the book itself (book/_static/mathjax, git-ignored), so math renders
# without internet. Copy it from node_modules when it is missing or another version; the copy
# goes through a temporary folder so that a half-finished copy is never used.
if [ ! -f node_modules/mathjax/es5/tex-chtml.js ]; then
    npm ci --no-audit --no-fund
fi
if ! cmp -s node_modules/mathjax/es5/tex-chtml.js book/_static/mathjax/tex-chtml.js; then
    tmp="$(mktemp -d node_modules/.mathjax-copy.XXXXXX)"
    cp -r node_modules/mathjax/es5/. "$tmp"
    mkdir -p book/_static
    rm -rf book/_static/mathjax
    mv "$tmp" book/_static/mathjax
fi

# --all: rebuild every page (an incremental build would not repeat old pages' warnings),
# -W: warnings are errors, -n: warn about broken references, --keep-going: report them all.
# (jupyter_book has no __main__ module, so call its command-line entry point.)
"$PYTHON" -c 'import sys; from jupyter_book.cli.main import main; sys.exit(main(prog_name="jupyter-book"))' \
    build . --path-output "$BOOK_OUTPUT" --all -W -n --keep-going
echo "Book built: $BOOK_OUTPUT/_build/html/index.html"
