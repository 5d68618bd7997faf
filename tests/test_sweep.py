"""benchmarks/sweep.py: a plan of probe runs, checked before anything starts, run side by side within a budget, summed
up, and merged into the probes file once."""

import json

import pytest

from benchmarks import sweep
from saae_lib.digit_classifier import judge_path
from saae_lib.models import MODELS


def write_plan(path, groups, seeds=(0, 1)):
    path.write_text(json.dumps({"defaults": {"seeds": list(seeds), "every": 1}, "groups": groups}))
    return path


@pytest.fixture
def real_data(monkeypatch, mnist_root):
    """Probes refuse smoke mode; their subprocesses read MNIST from where the tests do (the judge classifier from
    whatever cache this environment has)."""
    monkeypatch.setenv("SAAE_FAST", "0")
    monkeypatch.setenv("SAAE_DATA_DIR", str(mnist_root))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def test_the_plan_parses_and_names_known_models():
    groups = sweep.load_plan(sweep.PLAN)
    assert groups and {g.stage for g in groups} == set(sweep.STAGES)
    for group in groups:
        assert group.model in MODELS, group.name
        assert group.seeds == (0, 1, 2) and group.every >= 1
        if group.ema or group.recalibrate:
            assert "classification" in MODELS[group.model].measures and group.options.get("batch_norm")


def test_a_dry_run_prints_the_run_count_and_an_estimate(capsys):
    expected = sum(len(g.seeds) for g in sweep.load_plan(sweep.PLAN))
    # --skip-invalid: the count and estimate do not depend on which planned options the library has yet
    code = sweep.main(["--dry-run", "--stage", "all", "--parallel", "8", "--assume-device", "cuda",
                       "--budget-seconds", "500", "--skip-invalid"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{expected} runs in" in out and "with --parallel 8" in out and "budget 500 s" in out


def test_refused_options_are_named_one_line_each_before_anything_starts(tmp_path, capsys):
    plan = write_plan(tmp_path / "plan.json", [
        {"name": "ok", "stage": "validation", "model": "cluster", "options": {"hidden": [16, 16], "epochs": 1}},
        {"name": "typo", "stage": "validation", "model": "semi",
         "options": {"hidden": [16, 16], "epochs": 1, "frobnicate": 3}},
    ])
    out_dir = tmp_path / "out"
    assert sweep.main(["--plan", str(plan), "--out-dir", str(out_dir)]) == 2
    refused = [line for line in capsys.readouterr().out.splitlines() if line.startswith("refused:")]
    assert len(refused) == 2 and all("typo seed" in line and "frobnicate" in line for line in refused)
    assert not out_dir.exists()  # nothing started


@pytest.mark.parametrize("group, message", [
    ({"name": "x", "stage": "later", "model": "ae"}, "'stage'"),
    ({"name": "a b", "stage": "test", "model": "ae"}, "'name'"),
    ({"name": "x", "stage": "test", "model": "ae", "seeds": []}, "'seeds'"),
    ({"name": "x", "stage": "test", "model": "ae", "colour": "red"}, "unknown field"),
])
def test_a_malformed_plan_is_refused(group, message, tmp_path, capsys):
    plan = write_plan(tmp_path / "plan.json", [group])
    assert sweep.main(["--plan", str(plan), "--dry-run"]) == 2
    assert message in capsys.readouterr().err


def test_a_mini_sweep_runs_side_by_side_and_merges_once(real_data, tmp_path, capsys):
    # semi where the judge classifier is cached (training it would take minutes); else cluster, which needs none
    if judge_path().is_file():
        group = {"name": "tiny", "stage": "validation", "model": "semi", "ema": [0.99], "recalibrate": True,
                 "options": {"hidden": [16, 16], "epochs": 1, "batch_norm": True, "lr_schedule": "cosine"}}
    else:
        group = {"name": "tiny", "stage": "validation", "model": "cluster", "options": {"hidden": [16, 16],
                                                                                      "epochs": 1}}
    plan = write_plan(tmp_path / "plan.json", [group])
    out_dir = tmp_path / "out"
    assert sweep.main(["--plan", str(plan), "--parallel", "2", "--out-dir", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "done   tiny seed 0" in out and "done   tiny seed 1" in out and "== summary" in out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert {(r["seed"], r["status"]) for r in summary["runs"]} == {(0, "done"), (1, "done")}
    main = summary["groups"]["tiny"]["main_measure"]
    assert summary["groups"]["tiny"]["validation"][main]["n"] == 2
    rows = sum(len((out_dir / "runs" / f"tiny-seed{s}.jsonl").read_text().splitlines()) for s in (0, 1))
    assert rows == 2  # one epoch, measured once, per seed

    probes = tmp_path / "probes.jsonl"
    probes.write_text('{"model": "ae", "seed": 9}\n')
    for _ in range(2):
        assert sweep.main(["--merge", str(out_dir), "--probes", str(probes)]) == 0
    lines = [json.loads(line) for line in probes.read_text().splitlines()]
    assert len(lines) == 1 + rows
    assert all("benchmarks.sweep, group tiny" in row["probe"] for row in lines[1:])
    assert sweep.main(["--plan", str(plan), "--out-dir", str(out_dir)]) == 2  # never appends to an earlier sweep


def test_the_budget_kills_what_still_runs(real_data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sweep.SECONDS_PER_EPOCH, "cpu", 0.001)  # an estimate that fits, a run that does not
    monkeypatch.setitem(sweep.STARTUP_SECONDS, "cpu", 0.0)
    plan = write_plan(tmp_path / "plan.json", [{"name": "long", "stage": "validation", "model": "cluster",
                                                "options": {"hidden": [16, 16], "epochs": 1000}}], seeds=[0])
    out_dir = tmp_path / "out"
    assert sweep.main(["--plan", str(plan), "--budget-seconds", "3", "--out-dir", str(out_dir)]) == 3
    assert "killed long seed 0" in capsys.readouterr().out
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["runs"][0]["status"] == "killed"
