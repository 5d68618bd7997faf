"""benchmarks/sweep.py: a plan of probe runs, checked before anything starts, run side by side within a budget, summed
up, and merged into the probes file once."""

import json

import pytest
import torch

from benchmarks import sweep
from saae_lib import metrics, pretrained
from saae_lib.checkpoints import load_checkpoint
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
    tests = [g for g in groups if g.stage == "test"]
    assert all(g.pretrained for g in tests) and not any(g.pretrained for g in groups if g.stage != "test")
    assert {g.pretrained for g in tests} == {"semi-100", "semi-1000", "cluster-16"}
    runs = sweep.plan_runs(groups)
    refused = sweep.refusals(runs)
    # no validation group trains a test group's runs again: the test groups' validation rows are the baselines
    assert not [run.name for run in refused if "duplicate" in run.reason]
    assert {g.name for g in groups} >= {"cluster30-base", "test-semi100", "test-semi1000", "test-cluster16"}
    assert not {"semi100-base", "semi1000-base", "cluster16-base"} & {g.name for g in groups}


def test_a_dry_run_prints_the_run_count_and_an_estimate(capsys):
    expected = sum(len(g.seeds) for g in sweep.load_plan(sweep.PLAN))
    # --skip-invalid: the count and estimate do not depend on which planned options the library has yet
    code = sweep.main(["--dry-run", "--stage", "all", "--parallel", "8", "--assume-device", "cuda",
                       "--budget-seconds", "500", "--skip-invalid"])
    out = capsys.readouterr().out
    assert code == 0
    assert f"{expected} runs in" in out and "with --parallel 8" in out and "budget 500 s" in out
    sizes = next(line for line in out.splitlines() if line.startswith("pretrained"))
    assert all(f"{name} ~11." in sizes for name in ("semi-100", "semi-1000", "cluster-16")) and "OVER" not in sizes


def test_a_duplicate_run_is_refused_and_the_test_run_kept(tmp_path, capsys):
    options = {"hidden": [16, 16], "epochs": 1}
    plan = write_plan(tmp_path / "plan.json", [
        {"name": "base", "stage": "validation", "model": "cluster", "options": {**options, "n_clusters": 16}},
        {"name": "other", "stage": "validation", "model": "cluster", "options": {**options, "n_clusters": 30}},
        # the same run: n_clusters=16 is the default, and --every only measures
        {"name": "final", "stage": "test", "model": "cluster", "options": options, "every": 5},
    ])
    assert sweep.main(["--plan", str(plan), "--stage", "all", "--dry-run", "--assume-device", "cpu"]) == 2
    refused = [line for line in capsys.readouterr().out.splitlines() if line.startswith("refused:")]
    assert len(refused) == 2 and all(line.startswith("refused: base seed") and "duplicate run" in line
                                     and "final seed" in line for line in refused)
    # without the test group, nothing is a duplicate
    assert sweep.main(["--plan", str(plan), "--dry-run", "--assume-device", "cpu"]) == 0


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
    ({"name": "x", "stage": "validation", "model": "ae", "pretrained": "ae-1"}, "only a test-stage group"),
    ({"name": "x", "stage": "test", "model": "ae", "pretrained": "a/b"}, "plain name"),
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


def test_a_failed_export_is_named_in_one_line_and_keeps_the_rows(tmp_path, capsys):
    out_dir = tmp_path / "out"
    (out_dir / "runs").mkdir(parents=True)
    rows = '{"model": "cluster", "seed": 0, "epoch": 1, "val_clustering_error": 0.5}\n'
    (out_dir / "runs" / "final-seed0.jsonl").write_text(rows)
    (out_dir / "sweep.json").write_text(json.dumps({
        "save_dir": str(tmp_path / "saved"), "parallel": 8,
        "runs": {"final-seed0": {"group": "final", "seed": 0, "stage": "test", "pretrained": "cluster-x"},
                 "final-seed1": {"group": "final", "seed": 1, "stage": "test"}}}))
    (out_dir / "summary.json").write_text(json.dumps({"runs": [{"group": "final", "seed": 0, "status": "killed"}]}))
    assert sweep.main(["--export-pretrained", str(out_dir / "pretrained")]) == sweep.EXIT_EXPORT
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("export failed:")]
    assert len(failed) == 1 and "cluster-x (final-seed0)" in failed[0] and "killed" in failed[0]
    assert (out_dir / "runs" / "final-seed0.jsonl").read_text() == rows
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["runs"] and "killed" in summary["pretrained"]["cluster-x"]["error"]
    assert not (out_dir / "pretrained" / "cluster-x").exists()


def test_a_tiny_test_run_is_exported_verified_and_predicts_as_its_checkpoint(real_data, tmp_path, capsys):
    group = {"name": "final", "stage": "test", "model": "cluster", "pretrained": "cluster-tiny",
             "options": {"hidden": [16, 16], "epochs": 1}}
    plan = write_plan(tmp_path / "plan.json", [group], seeds=[0])
    out_dir = tmp_path / "out"
    # --parallel 2: one thread for the probe on a 2-core machine (two spin-wait on each other, 20 times slower)
    assert sweep.main(["--plan", str(plan), "--stage", "test", "--parallel", "2", "--out-dir", str(out_dir)]) == 0
    summary = json.loads((out_dir / "summary.json").read_text())
    # the test group's validation numbers at its last epoch: the validation variants' baseline
    assert summary["groups"]["final"]["validation"]["val_clustering_error"]["n"] == 1
    assert summary["groups"]["final"]["test"]["test_clustering_error"]["n"] == 1

    folder = out_dir / "pretrained"
    assert sweep.main(["--export-pretrained", str(folder)]) == 0
    out = capsys.readouterr().out
    assert "exported cluster-tiny (final-seed0)" in out and "1 of 1 exported" in out
    manifest = pretrained.verify(folder / "cluster-tiny")
    saved = load_checkpoint(out_dir / "saved" / "final-seed0", device="cpu")
    assert manifest["name"] == "cluster-tiny" and manifest["seed"] == 0
    assert manifest["training_seconds"] == pytest.approx(sum(r["seconds"] for r in saved.history))
    assert manifest["history"] == json.loads(json.dumps(saved.history))
    assert json.loads((out_dir / "summary.json").read_text())["pretrained"]["cluster-tiny"]["bytes"] > 0

    loaded = pretrained.load(folder / "cluster-tiny", data=saved.data, device="cpu")
    for key, value in saved.model.state_dict().items():  # the checkpoint's weights, rounded to float16
        if key.split(".")[0] in saved.model.training_only:
            continue  # the discriminators, which a pretrained folder leaves out (tests/test_pretrained.py)
        expected = value.half().float() if value.is_floating_point() else value
        assert torch.equal(loaded.model.state_dict()[key], expected), key
    images = saved.data.val_images
    ours, theirs = metrics.predict(loaded.model, images), metrics.predict(saved.model, images)
    assert (ours == theirs).float().mean() > 0.99  # a near tie may fall the other way after rounding
    with torch.no_grad():
        saved.model.eval(), loaded.model.eval()
        probabilities = [model.encoder(images)[0].softmax(1) for model in (saved.model, loaded.model)]
    assert torch.allclose(*probabilities, atol=1e-2)
