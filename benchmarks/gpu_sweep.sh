#!/usr/bin/env bash
# The whole sweep of benchmarks/sweep_plan.json (validation probes, then the final recipes on the test set) on a GPU
# machine, then the final models exported as pretrained folders, in one command of about 9 minutes (a 490 s sweep
# budget, then at most EXPORT_SECONDS=60 of export, a few seconds either side; under a device's 10-minute limit):
#
#   bash benchmarks/gpu_sweep.sh [DATA_DIR [CACHE_DIR [SWEEP OPTION...]]]
#
# DATA_DIR: a folder holding MNIST/raw/ (becomes SAAE_DATA_DIR; "" or absent: the environment's is kept).
# CACHE_DIR: a folder holding the judge classifier digit_classifier-v1.pt (becomes SAAE_CACHE_DIR; without it the
# sweep trains the judge first, and the generated-digit numbers come from another judge than this machine's).
# SWEEP OPTION...: more options for benchmarks.sweep (--only GROUP..., --stage validation, ...).
#
# After the sweep, its own step (python -m benchmarks.sweep --export-pretrained; whatever it does, the sweep's rows are
# written already): each test group's first-seed saved run that the plan names a "pretrained" model for is exported
# (float16 weights + manifest, about 11 MB a 1000-1000 model) to sweep/pretrained/NAME and verified; one line per
# model, then their sizes.
#
# What comes back: a device returns at most 8 files from $OUT, 16 MiB each, 64 MiB in all. So the sweep's folder
# without the models is packed into $OUT/sweep.tar.gz (rows, logs, summary.json, sweep.json; unpack it and run
# `python -m benchmarks.sweep --merge sweep` here), beside $OUT/summary.json (with "pretrained": what became of each
# model) and $OUT/sweep.log; the models are one tar, sweep/pretrained/NAME/..., cut into 15 MiB parts
# $OUT/pretrained.tar.part0, part1, ... (unpack with `cat pretrained.tar.part* | tar -xf -`, then check each
# folder with saae_lib.pretrained.verify). Models over 56 MiB in all are left out (said in one line), so that the
# rows still come back. The saved runs themselves (optimizer states, ema-DECAY.pt) stay on the device, in
# /tmp/sweep-saved. Refused runs (options the library lacks, duplicate runs) are named and skipped (--skip-invalid):
# a one-off GPU session cannot afford to stop at the first typo.
# Exit status: the sweep's (0 all done, 1 a run failed, 2 bad plan or environment, 3 the budget ran out first), or,
# where that is 0, 4 if a model was not exported.
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
"$python" -m benchmarks.sweep --stage all --parallel 8 --budget-seconds 490 --out-dir "$out/sweep" \
    --save-dir /tmp/sweep-saved --skip-invalid "$@" 2>&1 | tee "$out/sweep.log"
status=${PIPESTATUS[0]}

export_seconds=${EXPORT_SECONDS:-60}
if [ -f "$out/sweep/sweep.json" ]; then
    timeout "$export_seconds" "$python" -m benchmarks.sweep --export-pretrained "$out/sweep/pretrained" 2>&1 \
        | tee -a "$out/sweep.log"
    export_status=${PIPESTATUS[0]}
    if [ "$export_status" -eq 124 ]; then
        echo "export failed: stopped after $export_seconds s (the models not named above as exported are missing)" \
            | tee -a "$out/sweep.log"
    fi
    if [ "$status" -eq 0 ] && [ "$export_status" -ne 0 ]; then status=4; fi
fi

limit=$((56 * 1024 * 1024))
if [ -d "$out/sweep/pretrained" ]; then
    rm -f "$out"/pretrained.tar*
    if tar -cf "$out/pretrained.tar" -C "$out/sweep" pretrained; then
        size=$(stat -c %s "$out/pretrained.tar")
        if [ "$size" -gt "$limit" ]; then
            echo "pretrained: left out, $size bytes is over the $limit this command brings back" | tee -a "$out/sweep.log"
        else
            split -b 15M -d -a 1 "$out/pretrained.tar" "$out/pretrained.tar.part" \
                && echo "pretrained: $size bytes in $(cd "$out" && echo pretrained.tar.part*)" | tee -a "$out/sweep.log"
        fi
    fi
    rm -f "$out/pretrained.tar"
    rm -rf "$out/sweep/pretrained"  # not in sweep.tar.gz: one file of it could pass 16 MiB, and then none comes back
fi
if [ -d "$out/sweep" ]; then
    [ -f "$out/sweep/summary.json" ] && cp "$out/sweep/summary.json" "$out/summary.json"
    tar -czf "$out/sweep.tar.gz" -C "$out" sweep && rm -rf "$out/sweep"
fi
echo "exit status $status; in $out (bytes):"
for file in "$out"/*; do
    [ -f "$file" ] && echo "  $(stat -c %s "$file") ${file##*/}"
done
exit "$status"
