#!/usr/bin/env bash
# The whole sweep of benchmarks/sweep_plan.json (validation probes, then the final recipes on the test set) on a GPU
# machine, in one command of under 9 minutes (a 500 s budget, a few seconds either side):
#
#   bash benchmarks/gpu_sweep.sh [DATA_DIR [CACHE_DIR [SWEEP OPTION...]]]
#
# DATA_DIR: a folder holding MNIST/raw/ (becomes SAAE_DATA_DIR; "" or absent: the environment's is kept).
# CACHE_DIR: a folder holding the judge classifier digit_classifier-v1.pt (becomes SAAE_CACHE_DIR; without it the
# sweep trains the judge first, and the generated-digit numbers come from another judge than this machine's).
# SWEEP OPTION...: more options for benchmarks.sweep (--only GROUP..., --stage validation, ...).
#
# What comes back: a device returns at most 8 files from $OUT, so the sweep's folder is packed into
# $OUT/sweep.tar.gz (rows, logs, summary.json, sweep.json; unpack it and run
# `python -m benchmarks.sweep --merge sweep` here), beside $OUT/summary.json and $OUT/sweep.log. The test runs'
# saved checkpoints (tens of MB each) stay on the device, in /tmp/sweep-saved. Refused runs (options the library
# lacks) are named and skipped (--skip-invalid): a one-off GPU session cannot afford to stop at the first typo.
# Exit status: the sweep's (0 all done, 1 a run failed, 2 bad plan or environment, 3 the budget ran out first).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 2
if [ -n "${1:-}" ]; then
    SAAE_DATA_DIR=$(cd "$1" && pwd) || exit 2
    export SAAE_DATA_DIR
fi
if [ -n "${2:-}" ]; then
    SAAE_CACHE_DIR=$(cd "$2" && pwd) || exit 2
    export SAAE_CACHE_DIR
fi
shift "$(($# < 2 ? $# : 2))"

out=${OUT:-$PWD/runs/gpu-sweep}
mkdir -p "$out" || exit 2
if [ -x .venv/bin/python ]; then python=.venv/bin/python; else python=python3; fi

# The probe names its commit with git; where git is missing, a stand-in that fails leaves the commit blank (merge
# --commit ID fills it in) instead of stopping every probe.
if ! command -v git >/dev/null 2>&1; then
    mkdir -p /tmp/sweep-nogit && printf '#!/bin/sh\nexit 1\n' >/tmp/sweep-nogit/git && chmod +x /tmp/sweep-nogit/git
    PATH=/tmp/sweep-nogit:$PATH
    echo "git is missing: the rows' commit stays blank (merge with --commit ID)"
fi

nvidia-smi -L || echo "nvidia-smi -L failed"
echo "python: $python; SAAE_DATA_DIR=${SAAE_DATA_DIR:-unset}; SAAE_CACHE_DIR=${SAAE_CACHE_DIR:-unset}; out: $out"
export PYTHONUNBUFFERED=1
"$python" -m benchmarks.sweep --stage all --parallel 8 --budget-seconds 500 --out-dir "$out/sweep" \
    --save-dir /tmp/sweep-saved --skip-invalid "$@" 2>&1 | tee "$out/sweep.log"
status=${PIPESTATUS[0]}

if [ -d "$out/sweep" ]; then
    [ -f "$out/sweep/summary.json" ] && cp "$out/sweep/summary.json" "$out/summary.json"
    tar -czf "$out/sweep.tar.gz" -C "$out" sweep && rm -rf "$out/sweep"
fi
echo "sweep exit status $status; in $out: $(cd "$out" && echo ./*)"
exit "$status"
