"""benchmarks/applications.py: chapter 5's numbers over seeds, and its table on the results page (never typed in)."""

import json
import re

import pytest

from benchmarks import applications
from saae_lib import anomaly


def fake_record(seed, commit="abc1234", shift=0.0):
    digits = {str(d): 0.9 + shift for d in range(10)}
    method = {"psnr": 20.0 + 10 * shift, "ssim": 0.8}
    return {
        "seed": seed, "version": applications.VERSION, "commit": commit, "machine": "cpu-2c", "recipe": "quick",
        "training_seconds": {"one-class AAEs": 100.0 + seed},
        "anomaly": {score: dict(digits) for score in anomaly.MODEL_SCORES + anomaly.BASELINE_SCORES},
        "denoising": {"gaussian 0.5": {"corrupted input": method, "best filter": method, "autoencoder": method,
                                       "denoising autoencoder": method, "filter": "median 3x3"}},
        "retrieval": {"16": {"AAE": {"map": 0.5 + shift, "precision_at_100": 0.7, "imbalance": 0.01,
                                     "correlation": 0.05}}},
        "features": {"pixels": {b: {"knn": 0.8, "linear": 0.85} for b in ("100", "1000", "all")}},
    }


def test_the_table_shows_mean_and_std_over_the_newest_record_of_each_seed_of_this_version():
    records = [fake_record(0, commit="old0000"), fake_record(0), fake_record(1, shift=0.02),
               fake_record(2, shift=0.04), {**fake_record(3), "version": applications.VERSION - 1}]
    text = applications.render(records)
    assert "Seeds 0, 1, 2" in text and "commit abc1234" in text
    assert "| AAE: reconstruction error | 92.0 ± 2.0 |" in text  # 90, 92, 94 %
    assert "| 16 | AAE | 52.0 ± 2.0 |" in text
    assert "20.2 ± 0.2 (0.800 ± 0.000), median 3x3" in text  # PSNR 20.0, 20.2, 20.4 dB
    assert "Not shown: 2 older record(s)" in text and "old0000" in text  # replaced, or of another version
    assert "94.8" in text and "97.5" in text  # the literature's rows, as cited


def test_one_seed_is_shown_without_a_spread_and_no_record_says_how_to_make_one():
    assert "| AAE: reconstruction error | 90.0 |" in applications.render([fake_record(0)])
    assert "python -m benchmarks.applications --seed 0" in applications.render([])


def test_the_stored_table_equals_its_records():
    assert applications.main(["--check"]) == 0, "run python -m benchmarks.applications"


def test_smoke_mode_records_nothing(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SAAE_FAST", "1")
    monkeypatch.setattr(applications, "RECORDS", tmp_path / "records.jsonl")
    assert applications.main(["--seed", "0"]) == 2
    assert "unset it" in capsys.readouterr().err and not (tmp_path / "records.jsonl").exists()


def test_records_are_json_lines(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps(fake_record(0)) + "\n\n" + json.dumps(fake_record(1)) + "\n")
    assert [r["seed"] for r in applications.load_records(path)] == [0, 1]
    assert applications.load_records(tmp_path / "missing.jsonl") == []


@pytest.mark.parametrize("seeds", [(0,), (0, 1, 2)])
def test_every_measure_of_a_record_appears(seeds):
    text = applications.render([fake_record(seed) for seed in seeds])
    for label in applications.SCORE_LABELS.values():
        assert f"| {label} |" in text
    assert "| gaussian 0.5 |" in text and "| pixels |" in text


def test_the_validation_runs_are_listed_from_their_records():
    text = applications.render([fake_record(0)])
    tuning = applications.load_records(applications.TUNING)
    assert tuning and "**What was tried on validation**" in text
    for record in tuning:
        assert applications.options_text(record["options"]) in text
    assert f"{100 * tuning[0]['auroc']['reconstruction']:.1f}" in text


def test_every_table_row_has_as_many_cells_as_its_header():
    """A name with a pipe in it (the semi model's q(y|x)) is escaped, not split into two cells."""
    record = fake_record(0)
    record["features"]["semi label q(y|x) (10-D)"] = record["features"]["pixels"]
    header_cells = None
    for line in applications.render([record]).splitlines():
        if not line.startswith("|"):
            header_cells = None
            continue
        cells = len(re.findall(r"(?<!\\)\|", line))
        header_cells = header_cells or cells
        assert cells == header_cells, line
    assert "q(y\\|x)" in applications.render([record])
