"""The committed chapters: stored outputs come from one clean, full run; metadata noise is stripped; lint is clean.

(Executing the chapters is nbval's job: `SAAE_FAST=1 pytest --nbval-lax notebooks`, called by `make test`.)
"""

import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("0*.ipynb"))
CHAPTERS = ["01_autoencoder", "02_adversarial_autoencoder", "03_supervised_aae", "04_classification",
            "05_applications"]


def code_cells(path):
    return [cell for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]


def test_the_five_chapters_exist():
    assert [path.stem for path in NOTEBOOKS] == CHAPTERS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_come_from_one_full_run(path):
    cells = code_cells(path)
    outputs = [output for cell in cells for output in cell.get("outputs", [])]
    assert [cell.get("execution_count") for cell in cells] == list(range(1, len(cells) + 1)), (
        f"{path.name} was not executed top to bottom in one run: run `make notebooks`")
    assert not [o for o in outputs if o["output_type"] == "error"], f"{path.name} stores an error output"
    # the words of the outputs, not their pictures: a PNG's base64 can spell anything (a figure of chapter 4 did)
    words = [output.get("text", "") if output["output_type"] == "stream" else
             {kind: value for kind, value in output.get("data", {}).items() if kind.startswith("text/")}
             for output in outputs]
    assert "smoke" not in json.dumps(words).lower(), (
        f"{path.name} stores outputs of a smoke run (SAAE_FAST=1); the book shows full runs: run `make notebooks`")
    bars = [o for o in outputs if o["output_type"] == "stream" and "it/s]" in "".join(o.get("text", ""))]
    assert not bars, f"{path.name} stores progress-bar fragments: run `make notebooks` (it sets SAAE_PROGRESS=0)"
    split = [index for index, cell in enumerate(cells)
             for a, b in itertools.pairwise(cell.get("outputs", []))
             if a["output_type"] == b["output_type"] == "stream" and a["name"] == b["name"]]
    assert not split, (f"{path.name}: code cells {split} store one printed text as several outputs (the book shows "
                       "a box each): run `make notebooks`, which joins them (scripts/run_notebooks.py, merge_streams)")
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= 3, f"{path.name} stores only {len(figures)} figures; expected a figure after each step"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_output_names_the_device(path):
    texts = ["".join(o.get("text", "")) for cell in code_cells(path) for o in cell.get("outputs", [])
             if o["output_type"] == "stream"]
    assert texts and texts[0].startswith("device: "), f"{path.name}: the first output should say which device ran it"


NBVAL_COMMENT = re.compile(r"^\s*#\s*(NBVAL_[A-Z_]+|PYTEST_VALIDATE_IGNORE_OUTPUT)\s*$", re.MULTILINE)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_nbval_markers_live_in_cell_metadata(path):
    """The book shows every code cell: nbval's markers are cell tags (nbval-check-output), never comments in the
    code a reader sees; and each chapter still has cells whose output nbval checks."""
    cells = code_cells(path)
    assert not [cell for cell in cells if NBVAL_COMMENT.search("".join(cell["source"]))], (
        f"{path.name}: move nbval comment markers into the cell's tags")
    assert any("nbval-check-output" in cell["metadata"].get("tags", []) for cell in cells)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_figure_has_alt_text_and_every_solution_toggle_says_so(path):
    """The book's <img> of a stored figure takes its alt text from the cell's metadata (mystnb.image.alt; without
    it the alt is the image's hash file name), and a hidden solution's toggle says "solution", not "code cell"."""
    for index, cell in enumerate(code_cells(path)):
        rendering = cell["metadata"].get("mystnb", {})
        if any("image/png" in output.get("data", {}) for output in cell.get("outputs", [])):
            alt = rendering.get("image", {}).get("alt", "")
            assert len(alt.split()) >= 5 and not alt.endswith(".png"), (
                f"{path.name}, code cell {index}: describe its figure in metadata.mystnb.image.alt")
        if "hide-input" in cell["metadata"].get("tags", []):
            assert "solution" in rendering.get("code_prompt_show", ""), (
                f"{path.name}, code cell {index}: its toggle should say solution (metadata.mystnb.code_prompt_show)")


def test_notebook_metadata_is_stripped():
    result = subprocess.run([sys.executable, "-m", "nbstripout", "--verify", "--keep-output", "--keep-count",
                             *map(str, NOTEBOOKS)], capture_output=True, text=True)
    assert result.returncode == 0, f"run nbstripout --keep-output --keep-count on the notebooks:\n{result.stdout}"


def test_ruff_is_clean_on_library_tests_and_notebooks():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "saae_lib", "scripts", "tests", "notebooks"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_reads_the_same_in_colab(path):
    """No MyST-only syntax in the chapters' text: Colab and Jupyter would show it raw. Citations and cross-references
    are plain links (the book turns links to its own pages into internal links)."""
    markdown = "\n".join("".join(cell["source"]) for cell in json.loads(path.read_text())["cells"]
                         if cell["cell_type"] == "markdown")
    roles = re.findall(r"\{[a-z]+\}`[^`]*`", markdown)
    directives = re.findall(r"^(?:```|:::)\{[a-z-]+\}", markdown, flags=re.M)
    assert roles == [] and directives == []
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", markdown):
        if "://" not in target:
            assert (path.parent / target).is_file(), f"{path.name} links to {target}, which does not exist"


def test_listings_show_the_librarys_current_source():
    """Every listing cell's stored output is the current source (refreshed without training:
    python scripts/refresh_listings.py)."""
    result = subprocess.run([sys.executable, str(ROOT / "scripts/refresh_listings.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr



@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_has_a_checked_exercise_with_a_hidden_solution(path):
    """An "implement it" exercise: a cell for the reader (a stub that raises NotImplementedError, passed to a
    checker of saae_lib.exercises) and a solution cell, hidden behind a toggle in the book (tag hide-input), collapsed
    in Jupyter and shown as a form in Colab, whose stored output says the checker accepted it."""
    cells = code_cells(path)
    checked = [cell for cell in cells if re.search(r"^passed = exercises\.check_\w+\(", "".join(cell["source"]), re.M)]
    stubs = [cell for cell in checked if "raise NotImplementedError" in "".join(cell["source"])]
    solutions = [cell for cell in checked if cell not in stubs]
    assert stubs and solutions, f"{path.name} has no exercise with a checker"
    for cell in solutions:
        assert "hide-input" in cell["metadata"].get("tags", []), f"{path.name}: a solution is not hidden in the book"
        assert cell["metadata"].get("jupyter", {}).get("source_hidden"), f"{path.name}: a solution is not collapsed"
        assert "".join(cell["source"]).startswith("# @title"), f"{path.name}: a solution has no Colab form title"
        output = "".join("".join(o["text"]) for o in cell["outputs"] if o["output_type"] == "stream")
        assert ": correct (" in output, f"{path.name}: a stored solution output is not the checker's 'correct'"
    for cell in stubs:
        output = "".join("".join(o["text"]) for o in cell["outputs"] if o["output_type"] == "stream")
        assert "not implemented yet" in output, f"{path.name}: a stub's stored output is not the checker's verdict"
