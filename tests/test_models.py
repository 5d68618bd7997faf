"""Tests for saae_lib.models: shapes, output ranges, label conditioning and argument checks."""

import pytest
import torch

from saae_lib import evaluation
from saae_lib.models import (
    MODELS,
    AdversarialAutoencoder,
    Autoencoder,
    Decoder,
    SemiSupervisedAAE,
    SupervisedAAE,
    mlp,
)
from saae_lib.priors import MixtureOfGaussiansPrior, make_prior
from saae_lib.training import CONFIG_FIELDS, MODEL_OPTIONS, TrainConfig

HIDDEN = (32, 32)


@pytest.fixture
def images():
    return torch.rand(6, 784, generator=torch.Generator().manual_seed(0))


def test_mlp_layout():
    net = mlp([4, 8, 3])
    assert [type(m).__name__ for m in net] == ["Linear", "ReLU", "Linear"]
    assert net(torch.zeros(2, 4)).shape == (2, 3)


@pytest.mark.parametrize("shape", [(6, 784), (6, 28, 28), (6, 1, 28, 28)])
def test_autoencoder_shapes_and_range(images, shape):
    torch.manual_seed(0)
    model = Autoencoder(latent_dim=3, hidden=HIDDEN)
    x = images.reshape(shape)
    z = model.encode(x)
    assert z.shape == (6, 3)
    out = model(x)
    assert out.shape == (6, 784)
    assert out.min() >= 0 and out.max() <= 1
    big = model.decode(torch.full((6, 3), 1e4))  # saturates the sigmoid, still in range
    assert big.min() >= 0 and big.max() <= 1
    assert model.kind == "ae"


def test_autoencoder_refuses_labels(images):
    model = Autoencoder(2, HIDDEN)
    with pytest.raises(ValueError, match="not conditioned"):
        model.decode(torch.zeros(6, 2), torch.zeros(6, dtype=torch.long))


def test_aae_has_a_discriminator_on_the_codes():
    model = AdversarialAutoencoder(latent_dim=4, hidden=HIDDEN)
    assert model.kind == "aae" and model.prior.dim == 4
    assert model.discriminator[0].in_features == 4
    assert model.discriminate(torch.zeros(5, 4)).shape == (5, 1)
    assert model.decoder.net[0].in_features == 4


def test_saae_decoder_takes_label_and_code():
    model = SupervisedAAE(latent_dim=2, hidden=HIDDEN)
    assert model.kind == "saae"
    assert model.decoder.net[0].in_features == 12  # one-hot label (10) + z (2)
    z = torch.randn(4, 2)
    labels = torch.tensor([0, 3, 9, 3])
    out = model.decode(z, labels)
    assert out.shape == (4, 784) and out.min() >= 0 and out.max() <= 1
    one_hot = torch.nn.functional.one_hot(labels, 10).float()
    torch.testing.assert_close(model.decode(z, one_hot), out)
    # the label matters: a different digit, a different image
    assert not torch.allclose(model.decode(z, torch.tensor([1, 1, 1, 1])), out)


def test_conditioned_decoder_without_labels_raises():
    model = SupervisedAAE(latent_dim=2, hidden=HIDDEN)
    with pytest.raises(ValueError, match="pass labels"):
        model.decode(torch.zeros(3, 2))
    with pytest.raises(ValueError, match="0..9"):
        model.decode(torch.zeros(2, 2), torch.tensor([0, 12]))


def test_label_aware_discriminator_sees_the_label():
    model = AdversarialAutoencoder(2, HIDDEN, prior=MixtureOfGaussiansPrior(), label_aware=True)
    assert model.discriminator[0].in_features == 12
    assert model.discriminate(torch.zeros(3, 2), torch.tensor([0, 1, 2])).shape == (3, 1)


def test_aae_argument_checks():
    with pytest.raises(ValueError, match="latent_dim"):
        AdversarialAutoencoder(latent_dim=3, hidden=HIDDEN, prior=make_prior("mixture"))
    with pytest.raises(ValueError, match="label_aware"):  # five petals cannot hold ten digits
        AdversarialAutoencoder(latent_dim=2, hidden=HIDDEN, prior=MixtureOfGaussiansPrior(5), label_aware=True)


def test_class_conditional_discriminator_with_a_gaussian_prior():
    """label_aware with a Gaussian: D(z, y) judges each digit's codes against the same N(0, I)."""
    model = SupervisedAAE(2, HIDDEN, label_aware=True)
    assert model.discriminator[0].in_features == 12
    z = torch.zeros(2, 2)
    assert not torch.equal(model.discriminate(z, torch.tensor([0, 0])), model.discriminate(z, torch.tensor([0, 1])))


@pytest.mark.parametrize("n_classes", [10, 16])
def test_semi_supervised_shapes(images, n_classes):
    model = SemiSupervisedAAE(latent_dim=5, hidden=HIDDEN, n_classes=n_classes)
    y, z = model.label_probabilities(images), model.encode(images)
    assert y.shape == (6, n_classes) and z.shape == (6, 5)
    torch.testing.assert_close(y.sum(1), torch.ones(6))
    assert (y >= 0).all()
    predicted = model.classify(images.reshape(6, 28, 28))
    assert predicted.dtype == torch.int64 and predicted.shape == (6,)
    assert torch.equal(predicted, y.argmax(1))
    out = model(images)
    assert out.shape == (6, 784) and out.min() >= 0 and out.max() <= 1
    assert model.decoder.net[0].in_features == n_classes + 5
    assert model.label_prior.dim == n_classes and model.prior.dim == 5
    assert model.style_discriminator[0].in_features == 5
    assert model.label_discriminator[0].in_features == n_classes


def test_decoder_with_probability_vectors():
    decoder = Decoder(latent_dim=2, hidden=HIDDEN, n_classes=10)
    probabilities = torch.softmax(torch.randn(3, 10), dim=1)
    assert decoder(torch.zeros(3, 2), probabilities).shape == (3, 784)


# -- each model's description ------------------------------------------------------------------------------------
def parameter_ids(*modules):
    return {id(p) for module in modules for p in module.parameters()}


PHASES = {  # model -> phase -> the submodules whose parameters that phase's optimizer updates
    "ae": {"reconstruction": ("encoder", "decoder")},
    "aae": {"reconstruction": ("encoder", "decoder"), "discriminator": ("discriminator",),
            "generator": ("encoder",)},
    "saae": {"reconstruction": ("encoder", "decoder"), "discriminator": ("discriminator",),
             "generator": ("encoder",)},
    "semi": {"reconstruction": ("encoder", "decoder"), "discriminator": ("style_discriminator", "label_discriminator"),
             "generator": ("encoder",), "classification": ("encoder",)},
    "cluster": {"reconstruction": ("encoder", "decoder"),
                "discriminator": ("style_discriminator", "label_discriminator"), "generator": ("encoder",)},
    "supervised": {"classification": ("encoder",)},
}


def test_every_model_is_described():
    assert set(MODELS) == set(PHASES)  # a new model needs its row here
    for kind, model in MODELS.items():
        assert model.kind == kind
        assert set(model.options) <= set(MODEL_OPTIONS)
        assert set(model.defaults) <= set(CONFIG_FIELDS)
        assert {"epochs", "latent_dim", "batch_size", "lr"} <= set(model.defaults)
        assert set(model.measures) <= set(evaluation.MEASURES)
        assert all(option in model.defaults for option in model.options if option not in {"prior_std"})


@pytest.mark.parametrize("kind", sorted(PHASES))
def test_each_phase_updates_its_own_parameters(kind):
    options = dict(model=kind, hidden=HIDDEN, device="cpu")
    trainer_config = TrainConfig(**options, **({"n_clusters": 4} if kind == "cluster" else {})).resolved()
    model = MODELS[kind].from_config(trainer_config)
    phases = model.phases(trainer_config)
    assert {name: {id(p) for m in modules for p in m.parameters()} for name, (modules, _) in phases.items()} == {
        name: parameter_ids(*(getattr(model, part) for part in parts)) for name, parts in PHASES[kind].items()}
    learning_rates = {name: lr for name, (_, lr) in phases.items()}
    for name, lr in learning_rates.items():
        adversarial = name in {"discriminator", "generator"}
        assert lr == (trainer_config.adversarial_lr if adversarial else trainer_config.lr)
    # every parameter is trained by some phase, and no module is built and thrown away
    assert set().union(*({id(p) for m in modules for p in m.parameters()} for modules, _ in phases.values())) == {
        id(p) for p in model.parameters()}


def test_supervised_aae_builds_one_decoder():
    saae, aae = SupervisedAAE(2, HIDDEN), AdversarialAutoencoder(2, HIDDEN)
    extra = 10 * HIDDEN[0]  # the one-hot label's weights into the decoder's first layer
    assert sum(p.numel() for p in saae.parameters()) == sum(p.numel() for p in aae.parameters()) + extra


@pytest.mark.parametrize("kind, label_classes", [("ae", 0), ("aae", 0), ("saae", 10), ("semi", 10), ("cluster", 4)])
def test_generate_decodes_prior_samples(kind, label_classes):
    config = TrainConfig(model=kind, hidden=HIDDEN, **({"n_clusters": 4} if kind == "cluster" else {})).resolved()
    model = MODELS[kind].from_config(config)
    assert model.label_classes == label_classes
    images, labels = model.generate(6, generator=torch.Generator().manual_seed(0))
    assert images.shape == (6, 784) and images.min() >= 0 and images.max() <= 1
    if label_classes:
        assert labels.shape == (6,) and labels.max() < label_classes
        fixed, _ = model.generate(3, labels=torch.tensor([1, 1, 1]))
        assert fixed.shape == (3, 784)
    else:
        assert labels is None
        with pytest.raises(ValueError, match="takes no label"):
            model.generate(3, labels=torch.tensor([1, 1, 1]))


@pytest.mark.parametrize("model", ["semi", "cluster", "supervised"])
def test_batch_norm_is_in_the_encoder_only_when_asked_for(model):
    """batch_norm=True: one BatchNorm1d before each hidden ReLU of the encoder's trunk; nowhere else."""
    for batch_norm in (False, True):
        config = TrainConfig(model=model, hidden=(32, 16), batch_norm=batch_norm, n_labels=None if model == "cluster"
                             else 100).resolved()
        built = MODELS[model].from_config(config)
        norms = [m for m in built.encoder.trunk.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        assert [m.num_features for m in norms] == ([32, 16] if batch_norm else [])
        assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in built.modules()) == len(norms)
