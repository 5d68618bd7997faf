"""Execute the five chapters in full mode, in place, storing their outputs; record each chapter's wall time.

    python scripts/run_notebooks.py [notebooks/01_autoencoder.ipynb ...]     (`make notebooks` runs all five)

Wall times go to benchmarks/results/chapters-<machine>.json, which `python -m benchmarks.bench` folds into its report.
"""

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks folder is part of the repository, not of the installed library

from benchmarks.bench import RESULTS_DIR, chapters_path, current_commit, machine_label  # noqa: E402
from saae_lib import settings  # noqa: E402


def main(paths):
    if settings.smoke_mode():
        sys.exit("make notebooks stores the book's outputs: unset SAAE_FAST (smoke mode is for tests only)")
    paths = [Path(p) for p in paths] or sorted((ROOT / "notebooks").glob("0*.ipynb"))
    os.environ["SAAE_PROGRESS"] = "0"  # the kernel inherits it: no progress-bar fragments in stored outputs
    label = machine_label(settings.pick_device())
    record_environment(label)
    record_path = chapters_path(label, ROOT / RESULTS_DIR)
    record = json.loads(record_path.read_text()) if record_path.is_file() else {"seconds": {}}
    record_path.parent.mkdir(parents=True, exist_ok=True)
    record["commit"] = current_commit(ROOT)
    for path in paths:
        notebook = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        client = NotebookClient(notebook, timeout=None, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        client.execute()
        seconds = time.perf_counter() - start
        merge_streams(notebook)
        nbformat.write(notebook, path)
        record["seconds"][path.stem] = round(seconds, 1)
        record.setdefault("commits", {})[path.stem] = record["commit"]  # chapters of one file run at other commits
        record["device"] = label
        # written after each chapter, so that an interrupted run keeps the times it measured
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        print(f"{path.name}: {seconds / 60:.1f} min", flush=True)


def merge_streams(notebook) -> None:
    """Join each run of consecutive stream outputs of one name (stdout, stderr) into one output, in place.

    The kernel sends a cell's printed lines in as many messages as it flushed, and the book shows each message as its
    own box: a table printed row by row came out as several boxes. Only consecutive ones are joined, so printed text
    never moves past a figure. (nbclient's coalesce_streams joins a name's streams across figures.)"""
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        merged = []
        for output in cell.outputs:
            if merged and output.output_type == merged[-1].output_type == "stream" and output.name == merged[-1].name:
                merged[-1].text += output.text
            else:
                merged.append(output)
        cell.outputs = merged


def record_environment(label):
    """The exact package versions behind the stored outputs: constraints/notebooks-<machine>.txt."""
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout
    header = (f"# The environment of the last full run of the chapters (make notebooks) on {label}, "
              f"{time.strftime('%Y-%m-%d')}, commit {current_commit(ROOT)}, "
              f"Python {platform.python_version()}.\n"
              f"# Reproduce: pip install -c constraints/notebooks-{label}.txt -e \".[book,test]\"\n")
    path = ROOT / "constraints" / f"notebooks-{label}.txt"
    path.parent.mkdir(exist_ok=True)
    path.write_text(header + frozen)


if __name__ == "__main__":
    main(sys.argv[1:])
