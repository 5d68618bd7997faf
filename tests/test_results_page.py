"""Tests of the Results page (book/results.md): its tables are rendered from the stored records, and its own prose
cites no measured number that neither a generated table beside it nor a named source holds.

Nothing here trains or measures: the tables are re-rendered from benchmarks/results/probes.jsonl (a fraction of a
second) and the page's text is read as text.
"""

import json
import re
from pathlib import Path

import pytest

from benchmarks import bench, results_page

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "book" / "results.md"
RESULTS = ROOT / "benchmarks" / "results"
EVIDENCE = ROOT.parent / "shared" / "evidence" / "prior-match-first-n.md"  # beside the checkout, read-only in CI

# Numbers the prose may cite that no probe record holds, each with its source (and checked against it below where
# the source is here to read).
PAPER = {  # Makhzani et al. 2015, arXiv 1511.05644
    "1.90 %": "semi-supervised MNIST test error, 100 labels (Section 5, Table 2)",
    "1.60 %": "semi-supervised MNIST test error, 1000 labels (Section 5, Table 2)",
    "9.55 %": "unsupervised clustering error, 16 clusters (Section 6)",
    "4.10 %": "unsupervised clustering error, 30 clusters (Section 6)",
}
EVIDENCE_NUMBERS = {"0.0462", "0.0035", "0.0051", "0.0026"}  # prior match: first 2000 / random 2000s / validation
BENCH_FACTS = {  # number in the prose: (results file, path to the value in it)
    "0.21": ("nvidia-h200.json", ("speed", "seconds_per_epoch_median", "aae_fp32")),
    "0.78": ("nvidia-h200.json", ("speed", "seconds_per_epoch_median", "aae_fp32_no_graph")),
    "0.13": ("nvidia-h200.json", ("speed", "seconds_per_epoch_median", "aae_bf16")),
}
VERSION_FLOORS = {  # "Python 3.10, torch 2.4, ...": the floors pyproject.toml declares
    "3.10": 'requires-python = ">=3.10"', "2.4": '"torch>=2.4"', "0.19": '"torchvision>=0.19"',
    "1.24.1": '"numpy>=1.24.1"', "3.8": '"matplotlib>=3.8"',
}
INCLUDE = re.compile(r"```\{include\}\s+(\S+)")
# A number with a decimal point or a per-cent sign: "4.0 %", "0.0216", "1.24.1" (not "2,200" nor "1e-3").
NUMBER = re.compile(r"(?<![\w.,-])\d+(?:\.\d+)+(?:\s?%)?(?![\w.]*\w)|(?<![\w.,-])\d+(?:,\d{3})*\s?%")


def normalized(token: str) -> str:
    return re.sub(r"\s?%$", " %", token)


def numbers_in(text: str) -> set[str]:
    return {normalized(m.group(0)) for m in NUMBER.finditer(text)}


def prose_of(page: str) -> str:
    """The page's own text: no code fences (the includes are fences), inline code, math, link targets or comments."""
    text = re.sub(r"```.*?```", " ", page, flags=re.S)
    text = re.sub(r"<!--.*?-->", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"\$[^$]*\$", " ", text)
    return re.sub(r"\]\([^)]*\)", "]", text)


def included(page: str) -> list[Path]:
    return [(PAGE.parent / target).resolve() for target in INCLUDE.findall(page)]


def unsourced(page: str) -> set[str]:
    """The prose's numbers that no generated table the page includes and no allow-list holds."""
    tables = set().union(*(numbers_in(path.read_text()) for path in included(page)))
    allowed = set(PAPER) | EVIDENCE_NUMBERS | set(BENCH_FACTS) | set(VERSION_FLOORS)
    return numbers_in(prose_of(page)) - tables - allowed


def test_stored_tables_are_a_fresh_rendering_of_the_records():
    for path, text in results_page.rendered(results_page.load_records(RESULTS / "probes.jsonl")).items():
        assert (ROOT / path).read_text() == text, f"{path} is stale or edited: run python -m benchmarks.results_page"
    assert results_page.main(["--check"]) == 0


def test_check_fails_on_a_hand_edit(tmp_path, monkeypatch):
    for path, text in results_page.rendered().items():
        (tmp_path / path.name).write_text(text.replace("0.0216", "0.0200"))
    monkeypatch.setattr(results_page, "RESULTS_DIR", tmp_path)
    monkeypatch.setattr(results_page, "PROBES", RESULTS / "probes.jsonl")
    assert results_page.main(["--check"]) == 1


def test_a_run_no_record_holds_is_refused():
    records = results_page.load_records(RESULTS / "probes.jsonl")
    with pytest.raises(results_page.RecordError, match="0 records"):
        results_page.records_for(records, "semi", results_page.Run({"n_labels": 100, "epochs": 100}))
    twice = records + [records[0]]
    with pytest.raises(results_page.RecordError, match="2 records"):
        results_page.records_for(twice, records[0]["model"], results_page.Run(records[0]["options"],
                                                                                epoch=records[0]["epoch"]))


def test_three_seeds_give_mean_and_std():
    records = [{"val_error": v} for v in (0.0278, 0.036, 0.0222)]
    text = results_page.cell(records, "semi", "val_error", results_page.Run({}, (0, 1, 2)), "cpu")
    assert text == "2.78 %, 3.60 %, 2.22 % (seeds 0, 1, 2): **2.87 ± 0.69 %**"


def test_declared_rows_type_in_no_measured_number():
    for table in results_page.TABLES:
        for row in table.rows:
            setting = set(re.findall(r"\d+\.\d+", row.measure))  # e.g. the decay in val_error_ema_0.99: a setting
            for text in (row.label, row.change, row.kept):
                assert numbers_in(text) <= setting, f"{text!r}: a measured number belongs in a record"
            assert row.paper in {"", "-", *PAPER}, row.paper
            assert table.name == "long-recipes-test" or not (row.changed.test or (row.first and row.first.test))
            if table.name == "long-recipes-test":
                assert row.changed.test, "the test table shows only what probe --test recorded"


def test_the_page_includes_every_generated_table():
    page = PAGE.read_text()
    paths = included(page)
    assert all(path.is_file() for path in paths), paths
    for path in results_page.rendered():
        assert (ROOT / path).resolve() in paths, f"book/results.md does not include {path}"
    assert (RESULTS / "results.md").resolve() in paths


def test_every_number_in_the_prose_has_a_source():
    assert unsourced(PAGE.read_text()) == set()


def test_a_hand_typed_number_is_caught():
    page = PAGE.read_text()
    assert unsourced(page + "\nThe first edition on a GPU reached 4.0 % after 100 epochs.\n") == {"4.0 %"}
    assert unsourced(page + "\nAn MMD of 0.0123.\n") == {"0.0123"}


def test_the_allowed_numbers_match_their_sources():
    prose = numbers_in(prose_of(PAGE.read_text()))
    for number, (name, keys) in BENCH_FACTS.items():
        stored = json.loads((RESULTS / name).read_text())
        for key in keys:
            stored = stored[key]
        decimals = len(number.split(".")[1])
        assert f"{stored:.{decimals}f}" == number, (number, name, keys, stored)
    pyproject = (ROOT / "pyproject.toml").read_text()
    for number, floor in VERSION_FLOORS.items():
        assert floor in pyproject, (number, floor)
    if EVIDENCE.is_file():
        evidence = EVIDENCE.read_text()
        for number in EVIDENCE_NUMBERS & prose:
            assert number in evidence, number
    stated_by_bench = {f"{100 * value:.2f} %" for value in bench.PAPER.values()}
    for number in PAPER:
        assert number in stated_by_bench, number  # the bench states the paper's numbers too


def test_the_page_does_not_explain_the_old_prior_match_artefact():
    page = PAGE.read_text()
    assert "Validation and test disagree" not in page
    assert "other writers" not in prose_of(page)
    assert "600,000" not in page
