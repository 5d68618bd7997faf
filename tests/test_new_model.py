"""A maintainer adds a model by writing one class (in models.py, plus its entry in MODELS): everything else, the
configuration, the training loop, checkpoints, evaluation and the command line, takes it from there. This test
adds a denoising autoencoder at run time and drives it through all of them."""

import json

import numpy as np
import pytest
import torch

from saae_lib import cli, evaluation, models
from saae_lib.checkpoints import load_checkpoint, save_checkpoint
from saae_lib.training import ConfigError, TrainConfig, train
from tests.test_models import check_model_description, check_phases_update_only_their_parameters


class DenoisingAutoencoder(models.Autoencoder):
    """An autoencoder that reconstructs clean images from noisy ones."""

    kind = "toy_dae"
    defaults = dict(epochs=2, latent_dim=2, batch_size=100, lr=2e-3, input_noise=0.5)

    def __init__(self, *, latent_dim, hidden, input_noise):  # input_noise: an option it now uses, by taking it
        super().__init__(latent_dim=latent_dim, hidden=hidden)
        self.input_noise = input_noise

    def training_step(self, x, y, trainer) -> dict:
        with trainer.autocast():
            noisy = models.noisy(x, self.input_noise, trainer.generator)
            loss = models.reconstruction_loss(self.decoder(self.encoder(noisy)), x)
        return {"reconstruction": trainer.update("reconstruction", loss)}


@pytest.fixture
def with_new_model(monkeypatch):
    monkeypatch.setitem(models.MODELS, "toy_dae", DenoisingAutoencoder)


def test_a_new_model_passes_every_model_check(with_new_model, tiny_mnist, tiny_options):
    """The checks every model in MODELS gets (tests/test_models.py) read the class: the new one passes them too."""
    check_model_description("toy_dae")
    check_phases_update_only_their_parameters("toy_dae", tiny_mnist, **tiny_options)


def test_a_new_model_trains_saves_and_evaluates(with_new_model, tmp_path, tiny_mnist, tiny_options):
    trainer = train("toy_dae", data=tiny_mnist, progress=False, **tiny_options)
    assert [r["epoch"] for r in trainer.history] == [1, 2] and "val_reconstruction" in trainer.history[0]
    assert trainer.config.input_noise == 0.5
    save_checkpoint(trainer, tmp_path)
    loaded = load_checkpoint(tmp_path, data=tiny_mnist)
    assert isinstance(loaded.model, DenoisingAutoencoder)
    result = evaluation.test_metrics(loaded)
    assert {"test_reconstruction_mse", "prior_match_mmd"} <= set(result)
    with pytest.raises(ConfigError, match="balance is not used by the toy_dae model"):
        TrainConfig(model="toy_dae", balance=1.0).resolved()


def test_a_new_model_on_the_command_line(with_new_model, isolated, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("SAAE_FAST", "1")
    out = tmp_path / "toy_dae"
    assert cli.main(["train", "toy_dae", "--out", str(out), "--epochs", "1", "--hidden", "32", "--input-noise", "0.2",
                     "--device", "cpu"]) == 0
    assert json.loads((out / "metrics.json").read_text())["model"] == "toy_dae"
    assert cli.main(["encode", str(out), "--out", str(tmp_path / "codes.npz")]) == 0
    assert np.load(tmp_path / "codes.npz")["codes"].shape[1] == 2
    assert cli.main(["sample", str(out), "--n", "3", "--out", str(tmp_path / "s.npz")]) == 0
    assert torch.load(out / "checkpoint.pt", weights_only=True)["config"]["input_noise"] == 0.2
    capsys.readouterr()
