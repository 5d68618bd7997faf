"""Faults a Python user of the library can meet: each ends in one clear error (or a sensible run), never a silent
wrong result or a traceback from deep inside torch."""

import os
import subprocess

import pytest
import torch

from saae_lib import data as sdata
from saae_lib import settings, training
from saae_lib.training import ConfigError, TrainConfig, Trainer, placement, train


# -- smoke mode and other switches --------------------------------------------------------------------------------
@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("YES", True), (" on ", True), ("0", False),
                                             ("false", False), ("off", False), ("", False)])
def test_smoke_mode_reads_on_and_off(monkeypatch, value, expected):
    monkeypatch.setenv("SAAE_FAST", value)
    assert settings.smoke_mode() is expected


@pytest.mark.parametrize("value", ["garbage", "ture", "2", "yes please"])
def test_smoke_mode_refuses_what_is_neither(monkeypatch, value):
    """SAAE_FAST=ture used to mean a full run, silently."""
    monkeypatch.setenv("SAAE_FAST", value)
    with pytest.raises(settings.SettingError, match=f"SAAE_FAST='{value}' is neither on nor off"):
        settings.smoke_mode()
    with pytest.raises(settings.SettingError):
        TrainConfig(model="ae").resolved()


def test_a_run_reads_smoke_mode_once(monkeypatch, tiny_mnist, tiny_options):
    monkeypatch.setenv("SAAE_FAST", "1")
    trainer = Trainer(TrainConfig(model="ae", **tiny_options), tiny_mnist)
    monkeypatch.setenv("SAAE_FAST", "0")  # switched off later: the run still knows what it is
    assert trainer.smoke and trainer.config.epochs == training.FAST_EPOCHS
    trainer.fit(progress=False)
    assert trainer.state_dict()["smoke"] is True


# -- precision from the hardware ------------------------------------------------------------------------------------
@pytest.mark.parametrize("capability, bf16", [((7, 5), False), ((8, 0), True), ((9, 0), True)])
def test_auto_precision_follows_the_gpus_bf16_units(monkeypatch, capability, bf16):
    """A T4 (compute capability 7.5) only emulates bf16 (torch.cuda.is_bf16_supported() still says yes): fp32 there,
    with the CUDA graph; Ampere and later: bf16 with the graph."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    config = TrainConfig(model="ae", precision="auto").resolved()
    chosen = placement(config, device=torch.device("cuda"))
    assert chosen.cuda_graph and chosen.bf16 is bf16
    if not bf16:
        with pytest.raises(ConfigError, match="bf16 is not supported natively on cuda"):
            placement(TrainConfig(model="ae", precision="bf16").resolved(), device=torch.device("cuda"))


# -- data the models would train on wrongly ------------------------------------------------------------------------
def with_images(data, **replaced):
    fields = {name: getattr(data, name) for name in ("train_images", "train_labels", "val_images", "val_labels",
                                                     "test_images", "test_labels")}
    return sdata.MNIST(**{**fields, **replaced}, device=torch.device("cpu"))


def test_images_in_0_to_255_are_refused(tiny_mnist, tiny_options):
    """They used to train with a negative loss."""
    data = with_images(tiny_mnist, train_images=tiny_mnist.train_images * 255)
    with pytest.raises(ValueError, match=r"train_images hold values from 0 to 255: .*divide 0..255 images by 255"):
        Trainer(TrainConfig(model="ae", epochs=1, **tiny_options), data)


def test_an_empty_training_set_is_refused(tiny_mnist, tiny_options):
    data = with_images(tiny_mnist, train_images=tiny_mnist.train_images[:0], train_labels=tiny_mnist.train_labels[:0])
    with pytest.raises(ValueError, match="no training images"):
        Trainer(TrainConfig(model="ae", epochs=1, **tiny_options), data)


def test_more_labels_than_the_digits_can_supply_is_one_config_error(tiny_mnist, tiny_options):
    """600 training images have about 60 of each digit: 1000 labels (100 per digit) cannot be drawn."""
    with pytest.raises(ConfigError, match="cannot supply n_labels=1000; ask for fewer labels") as caught:
        Trainer(TrainConfig(model="semi", epochs=1, n_labels=1000, **tiny_options), tiny_mnist)
    assert caught.value.option == "n_labels"


def test_batch_norm_with_a_last_batch_of_one_image_trains(tiny_mnist, tiny_options):
    """601 images in batches of 100 leave one image alone: batch norm has no statistics for it (a traceback after a
    whole epoch, before). That batch is skipped; every other image is trained on."""
    data = with_images(tiny_mnist, train_images=torch.cat([tiny_mnist.train_images, tiny_mnist.train_images[:1]]),
                       train_labels=torch.cat([tiny_mnist.train_labels, tiny_mnist.train_labels[:1]]))
    assert len(data.train_images) % tiny_options["batch_size"] == 1
    trainer = train("semi", data=data, epochs=1, batch_norm=True, n_labels=100, progress=False, **tiny_options)
    assert len(trainer.history) == 1
    with pytest.raises(ConfigError, match="batch_norm needs batches of at least 2"):
        TrainConfig(model="semi", batch_norm=True, batch_size=1).resolved()


def test_the_discriminator_width_is_one_option(tiny_mnist, tiny_options):
    """discriminator_hidden: declared once (TrainConfig), used by the models whose constructor takes it."""
    trainer = train("aae", data=tiny_mnist, epochs=1, discriminator_hidden=(16,), progress=False, **tiny_options)
    assert [m.out_features for m in trainer.model.discriminator if isinstance(m, torch.nn.Linear)] == [16, 1]
    assert [m.out_features for m in trainer.model.encoder if isinstance(m, torch.nn.Linear)] == [32, 32, 2]
    with pytest.raises(ConfigError, match="discriminator_hidden is not used by the ae model"):
        TrainConfig(model="ae", discriminator_hidden=(16,)).resolved()


# -- make lab ------------------------------------------------------------------------------------------------------
def test_make_lab_runs_as_root():
    """JupyterLab refuses to start as root without --allow-root ("Running as root is not recommended"), and
    containers and cloud VMs run as root: `make lab` passes it there, and only there."""
    commands = subprocess.run(["make", "-n", "lab"], capture_output=True, text=True, check=True).stdout
    lab = next(line for line in commands.splitlines() if "jupyter lab" in line)
    assert ("--allow-root" in lab) == (os.geteuid() == 0)


def test_a_bad_smoke_switch_is_one_line_on_the_command_line(tmp_path, isolated, monkeypatch, capsys):
    from saae_lib import cli

    monkeypatch.setenv("SAAE_FAST", "ture")
    with pytest.raises(SystemExit) as exited:
        cli.main(["train", "ae", "--out", str(tmp_path / "run"), "--epochs", "1"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "SAAE_FAST='ture' is neither on nor off: set it to 1 or 0 (or unset it)" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_more_labels_than_the_data_has_on_the_command_line(tmp_path, isolated, monkeypatch, capsys):
    """One line naming the flag, exit 2, and no empty --out folder left behind."""
    from saae_lib import cli

    monkeypatch.setenv("SAAE_FAST", "1")  # 3000 training images: about 300 of each digit
    with pytest.raises(SystemExit) as exited:
        cli.main(["train", "semi", "--labels", "5000", "--out", str(tmp_path / "run"), "--hidden", "32", "--epochs",
                  "1", "--device", "cpu"])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "cannot supply --labels=5000; ask for fewer labels" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()
