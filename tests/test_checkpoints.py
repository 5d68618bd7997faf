"""Tests for saae_lib.checkpoints: round trips, exact resume, atomic writes and train_or_load."""

import os

import pytest
import torch

from saae_lib import checkpoints, training
from saae_lib.checkpoints import CHECKPOINT_NAME, load_checkpoint, save_checkpoint, train_or_load
from saae_lib.metrics import predict
from saae_lib.training import TrainConfig, Trainer, train

pytestmark = pytest.mark.usefixtures("isolated")


def without_time(history):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in history]


def assert_same_state(a: Trainer, b: Trainer):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def optimizer_tensors(trainer):
    return {(name, index, key): value
            for name, opt in trainer.optimizers.items()
            for index, state in opt.state_dict()["state"].items()
            for key, value in state.items()}


@pytest.mark.parametrize("model", ["aae", "saae", "semi"])
def test_round_trip(model, tmp_path, tiny_mnist, tiny_options):
    trainer = training.train(model, data=tiny_mnist, epochs=1, progress=False, **tiny_options)
    written = save_checkpoint(trainer, tmp_path / "run")
    assert written == tmp_path / "run" / CHECKPOINT_NAME and written.is_file()
    loaded = load_checkpoint(tmp_path / "run", data=tiny_mnist)
    assert loaded.config == trainer.config
    assert loaded.history == trainer.history
    assert_same_state(trainer, loaded)
    assert torch.equal(loaded.generator.get_state(), trainer.generator.get_state())
    saved_opt, loaded_opt = optimizer_tensors(trainer), optimizer_tensors(loaded)
    assert saved_opt.keys() == loaded_opt.keys() and saved_opt
    assert all(torch.equal(torch.as_tensor(saved_opt[k]), torch.as_tensor(loaded_opt[k])) for k in saved_opt)
    x = tiny_mnist.test_images[:50]
    trainer.model.eval()
    loaded.model.eval()
    with torch.no_grad():
        if model == "semi":
            assert torch.equal(predict(trainer.model, x), predict(loaded.model, x))
            assert torch.equal(trainer.model(x), loaded.model(x))
        elif model == "saae":
            labels = tiny_mnist.test_labels[:50]
            z = trainer.model.encode(x)
            assert torch.equal(trainer.model.decode(z, labels), loaded.model.decode(loaded.model.encode(x), labels))
        else:
            assert torch.equal(trainer.model(x), loaded.model(x))


def test_checkpoint_to_an_explicit_file_name(tmp_path, tiny_mnist, tiny_options):
    trainer = training.train("ae", data=tiny_mnist, epochs=1, progress=False, **tiny_options)
    path = save_checkpoint(trainer, tmp_path / "my_model.pt")
    assert path == tmp_path / "my_model.pt"
    assert_same_state(trainer, load_checkpoint(path, data=tiny_mnist, device="cpu"))


@pytest.mark.parametrize("model", ["aae", "semi"])
def test_exact_resume(model, tmp_path, tiny_mnist, tiny_options):
    """2 epochs, save, load, 2 more == 4 uninterrupted epochs, bit for bit (on the CPU)."""
    config = TrainConfig(model=model, epochs=4, **tiny_options)
    first = Trainer(config, tiny_mnist)
    first.fit(epochs=2, progress=False)
    save_checkpoint(first, tmp_path / "half")
    del first
    resumed = load_checkpoint(tmp_path / "half", data=tiny_mnist)
    assert len(resumed.history) == 2
    resumed.fit(progress=False)  # up to the config's 4 epochs

    straight = Trainer(config, tiny_mnist)
    straight.fit(progress=False)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    assert without_time(resumed.history) == without_time(straight.history)
    assert_same_state(resumed, straight)


def test_atomic_save_leaves_no_temporary_files(tmp_path, tiny_mnist, tiny_options):
    trainer = training.train("ae", data=tiny_mnist, epochs=1, progress=False, **tiny_options)
    save_checkpoint(trainer, tmp_path)
    save_checkpoint(trainer, tmp_path)  # overwriting too
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME]


def test_failed_save_keeps_the_old_checkpoint(monkeypatch, tmp_path, tiny_mnist, tiny_options):
    trainer = training.train("ae", data=tiny_mnist, epochs=1, progress=False, **tiny_options)
    path = save_checkpoint(trainer, tmp_path)
    before = path.read_bytes()

    def crash(obj, file):
        file.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoints.torch, "save", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(trainer, tmp_path)
    assert sorted(os.listdir(tmp_path)) == [CHECKPOINT_NAME]
    assert path.read_bytes() == before


def test_load_missing_checkpoint_gives_advice(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match="train"):
        load_checkpoint(tmp_path)


def test_generator_from_another_device_warns(tiny_mnist, tiny_options):
    trainer = training.train("ae", data=tiny_mnist, epochs=1, progress=False, **tiny_options)
    state = trainer.state_dict()
    state["generator_device"] = "cuda"
    other = Trainer(TrainConfig(model="ae", epochs=1, **tiny_options), tiny_mnist)
    with pytest.warns(UserWarning, match="random stream"):
        other.load_state_dict(state)
    assert_same_state(trainer, other)


# -- train_or_load ----------------------------------------------------------------------------------------------
def test_runs_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("SAAE_RUNS_DIR", str(tmp_path))
    assert checkpoints.runs_dir() == tmp_path
    monkeypatch.delenv("SAAE_RUNS_DIR")
    monkeypatch.setenv("SAAE_FAST", "1")
    assert checkpoints.runs_dir().name == "runs-smoke"  # smoke models never land where real ones live
    monkeypatch.setenv("SAAE_FAST", "0")
    assert checkpoints.runs_dir().name == "runs"


def test_train_or_load_reuses_a_matching_run(monkeypatch, capsys, isolated, tiny_mnist, tiny_options):
    options = dict(model="ae", epochs=1, **tiny_options)
    first = train_or_load("reuse_me", data=tiny_mnist, progress=False, **options)
    assert (isolated.runs / "reuse_me" / CHECKPOINT_NAME).is_file()
    assert "loaded" not in capsys.readouterr().out

    def no_training(*args, **kwargs):
        raise AssertionError("a matching run must be loaded, not trained again")

    monkeypatch.setattr(Trainer, "fit", no_training)
    again = train_or_load("reuse_me", data=tiny_mnist, progress=False, **options)
    out = capsys.readouterr().out
    assert "loaded 'reuse_me'" in out
    assert f"last epoch: reconstruction {first.history[-1]['reconstruction']:.4f}" in out  # as when it was trained
    assert again.history == first.history
    assert_same_state(first, again)


def test_train_or_load_retrains_a_mismatching_run(capsys, isolated, tiny_mnist, tiny_options):
    first = train_or_load("mismatch", data=tiny_mnist, progress=False, model="ae", epochs=1, seed=0, **tiny_options)
    capsys.readouterr()
    second = train_or_load("mismatch", data=tiny_mnist, progress=False, model="ae", epochs=1, seed=1, **tiny_options)
    assert "other settings" in capsys.readouterr().out
    assert second.config.seed == 1
    assert without_time(second.history) != without_time(first.history)
    saved = torch.load(isolated.runs / "mismatch" / CHECKPOINT_NAME, weights_only=True)
    assert saved["config"]["seed"] == 1  # the new run replaced the old one


def test_train_or_load_does_not_mix_smoke_and_real_runs(monkeypatch, capsys, tiny_mnist, tiny_options):
    monkeypatch.setenv("SAAE_FAST", "1")
    train_or_load("smoke_or_not", data=tiny_mnist, progress=False, model="ae", epochs=1, **tiny_options)
    monkeypatch.setenv("SAAE_FAST", "0")
    capsys.readouterr()
    real = train_or_load("smoke_or_not", data=tiny_mnist, progress=False, model="ae", epochs=1, **tiny_options)
    assert "other settings" in capsys.readouterr().out
    assert real.state_dict()["smoke"] is False


@pytest.mark.parametrize("option, asked", [("device", "auto"), ("cuda_graph", "off")])
def test_train_or_load_ignores_where_and_how_fast_a_run_trained(option, asked, monkeypatch, capsys, tiny_mnist,
                                                                tiny_options):
    """A run trained with device='cpu' is the same run when asked for with device='auto' on this machine; a CUDA graph
    changes how fast a run trains, not what it is."""
    options = {**tiny_options, "model": "ae", "epochs": 1}
    first = train_or_load(f"ignores_{option}", data=tiny_mnist, progress=False, **options)
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("must be loaded, not trained"))
    again = train_or_load(f"ignores_{option}", data=tiny_mnist, progress=False, **{**options, option: asked})
    assert "loaded" in capsys.readouterr().out
    assert_same_state(first, again)


def test_a_run_trained_with_a_cuda_graph_loads_on_a_cpu(tmp_path, tiny_mnist, tiny_options):
    trainer = train("ae", data=tiny_mnist, epochs=1, progress=False, **tiny_options)
    state = trainer.state_dict()
    state["config"].update(cuda_graph="on", device="cuda")  # as saved by a GPU run with the graph switched on
    torch.save({**state, "format": checkpoints.FORMAT}, tmp_path / CHECKPOINT_NAME)
    loaded = load_checkpoint(tmp_path, data=tiny_mnist, device="cpu")
    assert not loaded.use_cuda_graph
    assert_same_state(trainer, loaded)


def test_a_checkpoint_of_the_first_format_still_loads(tmp_path, tiny_mnist, tiny_options):
    """Format 1 stored every option, also those a model does not use (at their defaults then)."""
    trainer = train("ae", data=tiny_mnist, epochs=1, progress=False, **tiny_options)
    state = trainer.state_dict()
    state["config"].update(prior="gaussian", prior_std=1.0, label_aware=False)
    torch.save(state, tmp_path / CHECKPOINT_NAME)  # no "format" key
    loaded = load_checkpoint(tmp_path, data=tiny_mnist)
    assert loaded.config == trainer.config and loaded.history == trainer.history


@pytest.mark.parametrize("model, option, before", [("aae", "lr_schedule", "constant"), ("semi", "batch_norm", False),
                                                   ("ae", "cuda_graph", "off")])
def test_a_checkpoint_saved_before_an_option_existed_loads_as_it_was_trained(model, option, before, tmp_path,
                                                                             tiny_mnist, tiny_options):
    """A run saved before `option` existed was trained without it: a newer default must not change the model."""
    options = dict(n_labels=20) if model == "semi" else {}
    trainer = train(model, data=tiny_mnist, epochs=1, progress=False, **{option: before}, **options, **tiny_options)
    state = trainer.state_dict()
    del state["config"][option]
    torch.save({**state, "format": checkpoints.FORMAT}, tmp_path / CHECKPOINT_NAME)
    loaded = load_checkpoint(tmp_path, data=tiny_mnist)
    assert getattr(loaded.config, option) == before and loaded.config == trainer.config
    assert_same_state(trainer, loaded)


@pytest.mark.parametrize("change, match", [
    (lambda s: s["config"].update(hidden=(16, 16)), "do not fit the ae model"),
    (lambda s: s["config"].update(model="no-such-model"), "invalid configuration"),
    (lambda s: s.pop("history"), "lacks history"),
    (lambda s: s["optimizers"].clear(), "optimizers"),
])
def test_a_checkpoint_is_checked_before_use(change, match, tmp_path, tiny_mnist, tiny_options):
    state = train("ae", data=tiny_mnist, epochs=1, progress=False, **tiny_options).state_dict()
    change(state)
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(checkpoints.CheckpointError, match=match):
        load_checkpoint(tmp_path, data=tiny_mnist)


@pytest.mark.parametrize("arguments, match", [
    (dict(train="yes"), "train must be None, True or False"),
    (dict(train=1), "train must be None, True or False"),
    (dict(pretrained="../semi-100"), "is not the name of a pretrained model"),
    (dict(train=False), "needs pretrained=NAME"),
])
def test_train_or_load_refuses_unclear_pretrained_arguments(arguments, match, monkeypatch, isolated):
    """Refused in one line before anything is loaded, downloaded or trained (train_or_load with pretrained= itself:
    tests/test_pretrained.py)."""
    monkeypatch.setattr(Trainer, "fit", lambda *a, **k: pytest.fail("must not train"))
    with pytest.raises(ValueError, match=match) as error:
        train_or_load("refused", model="ae", epochs=1, **arguments)
    assert "\n" not in str(error.value) and not (isolated.runs / "refused").exists()
