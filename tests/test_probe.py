"""benchmarks/probe.py: validation probes record the model's measures on the validation split, never the test set."""

import json
from types import SimpleNamespace

import pytest
import torch

from benchmarks import probe
from saae_lib import evaluation


@pytest.fixture
def real_mode(monkeypatch, isolated):
    monkeypatch.setenv("SAAE_FAST", "0")


@pytest.mark.parametrize("model, options, keys", [
    ("aae", ["prior=\"mixture\"", "label_aware=true"], {"val_reconstruction_mse", "val_prior_match_mmd",
                                                      "val_component_accuracy"}),
    ("semi", ["n_labels=100"], {"val_reconstruction_mse", "val_error", "generated_label_accuracy"}),
    ("cluster", ["n_clusters=4"], {"val_reconstruction_mse", "val_clustering_error"}),
])
def test_a_probe_writes_validation_numbers(model, options, keys, real_mode, tmp_path, capsys, monkeypatch):
    real_measures = probe.validation_numbers
    judge = SimpleNamespace(predict=lambda images: torch.zeros(len(images), dtype=torch.long))  # reads every digit 0
    monkeypatch.setattr(evaluation, "load_judge", lambda *args, **kwargs: (judge, 0.99))

    def spy(trainer):
        trainer.data.test_images = trainer.data.test_labels = None  # any use of the test set would fail here
        return real_measures(trainer)

    monkeypatch.setattr(probe, "validation_numbers", spy)
    out = tmp_path / "probes.jsonl"
    argv = [model, *options, "hidden=[8]", "epochs=2", "lr_schedule=\"cosine\"", "--seed", "3", "--every", "1",
            "--out", str(out)]
    assert probe.main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert rows[0]["seed"] == 3 and rows[0]["options"]["lr_schedule"] == "cosine"
    assert keys <= set(rows[-1]) and not any(key.startswith("test_") for key in rows[-1])
    if "generated_label_accuracy" in keys:  # the fake judge reads every generated digit as a 0
        assert rows[-1]["generated_label_accuracy"] == 0.1
    capsys.readouterr()


def test_a_probe_refuses_bad_options_and_smoke_mode(real_mode, capsys, monkeypatch):
    with pytest.raises(SystemExit):
        probe.main(["ae", "prior=\"mixture\""])
    assert "prior is not used by the ae model" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        probe.main(["ae", "epochs"])
    assert "key=value" in capsys.readouterr().err
    monkeypatch.setenv("SAAE_FAST", "1")
    with pytest.raises(SystemExit):
        probe.main(["ae"])
    assert "unset SAAE_FAST" in capsys.readouterr().err


def test_a_final_recipe_is_measured_on_the_test_set_once(real_mode, tmp_path, capsys, monkeypatch):
    judge = SimpleNamespace(predict=lambda images: torch.zeros(len(images), dtype=torch.long))
    monkeypatch.setattr(evaluation, "load_judge", lambda *args, **kwargs: (judge, 0.99))
    out = tmp_path / "probes.jsonl"
    argv = ["semi", "n_labels=100", "hidden=[8]", "epochs=2", "--every", "1", "--test", "--out", str(out)]
    assert probe.main(argv) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [("test" in row) for row in rows] == [False, False, True]  # two validation rows, then the test row
    assert rows[-1]["epoch"] == 2 and 0 <= rows[-1]["test"]["test_error"] <= 1
    capsys.readouterr()


def test_a_saved_run_is_measured_only_with_the_options_it_was_trained_with(real_mode, tmp_path, capsys, monkeypatch):
    judge = SimpleNamespace(predict=lambda images: torch.zeros(len(images), dtype=torch.long))
    monkeypatch.setattr(evaluation, "load_judge", lambda *args, **kwargs: (judge, 0.99))
    out, folder = tmp_path / "probes.jsonl", tmp_path / "semi_run"
    options = ["semi", "n_labels=100", "hidden=[8]", "epochs=2", "batch_norm=true", "--seed", "2"]
    assert probe.main([*options, "--every", "2", "--recalibrate", "--save", str(folder), "--out", str(out)]) == 0
    trained = json.loads(out.read_text().splitlines()[-1])
    assert probe.main([*options, "--recalibrate", "--saved", str(folder), "--out", str(out)]) == 0
    measured = json.loads(out.read_text().splitlines()[-1])
    assert measured["saved"] == str(folder) and measured["epoch"] == 2
    for key in ("val_error", "val_error_recalibrated", "val_reconstruction_mse"):  # the same model, measured again
        assert measured[key] == pytest.approx(trained[key], abs=1e-6)
    lines = len(out.read_text().splitlines())
    for argv, message in [
        ([*options[:-1], "3"], "trained with other settings (seed=2)"),
        ([*options[:3], *options[4:]], "trained with other settings"),  # epochs=2 left out: the recipe's 40
        ([*options, "--ema", "0.99"], "--ema, --save and --test need the training itself"),
    ]:
        with pytest.raises(SystemExit):
            probe.main([*argv, "--saved", str(folder), "--out", str(out)])
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit):
        probe.main([*options, "--saved", str(tmp_path / "nothing"), "--out", str(out)])
    assert "nothing" in capsys.readouterr().err
    assert len(out.read_text().splitlines()) == lines  # nothing written for a refused measurement
