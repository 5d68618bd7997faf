"""Tests for saae_lib.models: shapes, output ranges, label conditioning and argument checks."""

import inspect

import pytest
import torch

from saae_lib import evaluation
from saae_lib.models import (
    MODELS,
    AdversarialAutoencoder,
    Autoencoder,
    Decoder,
    Discriminator,
    Model,
    SemiSupervisedAAE,
    SupervisedAAE,
    mlp,
)
from saae_lib.priors import MixtureOfGaussiansPrior, make_prior
from saae_lib.training import CONFIG_FIELDS, MODEL_OPTIONS, TrainConfig, Trainer

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
    model = Autoencoder(latent_dim=2, hidden=HIDDEN)
    with pytest.raises(ValueError, match="not conditioned"):
        model.decode(torch.zeros(6, 2), torch.zeros(6, dtype=torch.long))


def test_aae_has_a_discriminator_on_the_codes():
    model = AdversarialAutoencoder(latent_dim=4, hidden=HIDDEN)
    assert model.kind == "aae" and model.prior.dim == 4
    assert isinstance(model.discriminator, Discriminator) and model.discriminator.in_features == 4
    assert model.discriminate(torch.zeros(5, 4)).shape == (5, 1)
    assert model.decoder.in_features == 4


def test_saae_decoder_takes_label_and_code():
    model = SupervisedAAE(latent_dim=2, hidden=HIDDEN)
    assert model.kind == "saae"
    assert model.decoder.in_features == 12  # one-hot label (10) + z (2)
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
    model = AdversarialAutoencoder(latent_dim=2, hidden=HIDDEN, prior=MixtureOfGaussiansPrior(), label_aware=True)
    assert model.discriminator.in_features == 12
    assert model.discriminate(torch.zeros(3, 2), torch.tensor([0, 1, 2])).shape == (3, 1)


def test_aae_argument_checks():
    with pytest.raises(ValueError, match="latent_dim"):
        AdversarialAutoencoder(latent_dim=3, hidden=HIDDEN, prior=make_prior("mixture"))
    with pytest.raises(ValueError, match="label_aware"):  # five petals cannot hold ten digits
        AdversarialAutoencoder(latent_dim=2, hidden=HIDDEN, prior=MixtureOfGaussiansPrior(5), label_aware=True)


def test_class_conditional_discriminator_with_a_gaussian_prior():
    """label_aware with a Gaussian: D(z, y) judges each digit's codes against the same N(0, I)."""
    model = SupervisedAAE(latent_dim=2, hidden=HIDDEN, label_aware=True)
    assert model.discriminator.in_features == 12
    z = torch.zeros(2, 2)
    assert not torch.equal(model.discriminate(z, torch.tensor([0, 0])), model.discriminate(z, torch.tensor([0, 1])))


@pytest.mark.parametrize("n_classes", [10, 16])
def test_semi_supervised_shapes(images, n_classes):
    model = SemiSupervisedAAE(latent_dim=5, hidden=HIDDEN, n_labels=100, input_noise=0.3, input_dropout=0.0,
                              hidden_noise=0.0, balance=0.0, batch_norm=False, n_classes=n_classes)
    y, z = model.label_probabilities(images), model.encode(images)
    assert y.shape == (6, n_classes) and z.shape == (6, 5)
    torch.testing.assert_close(y.sum(1), torch.ones(6))
    assert (y >= 0).all()
    predicted = model.classify(images.reshape(6, 28, 28))
    assert predicted.dtype == torch.int64 and predicted.shape == (6,)
    assert torch.equal(predicted, y.argmax(1))
    out = model(images)
    assert out.shape == (6, 784) and out.min() >= 0 and out.max() <= 1
    assert model.decoder.in_features == n_classes + 5
    assert model.label_prior.dim == n_classes and model.prior.dim == 5
    assert model.style_discriminator.in_features == 5
    assert model.label_discriminator.in_features == n_classes


def test_decoder_with_probability_vectors():
    decoder = Decoder(latent_dim=2, hidden=HIDDEN, n_classes=10)
    probabilities = torch.softmax(torch.randn(3, 10), dim=1)
    assert decoder(torch.zeros(3, 2), probabilities).shape == (3, 784)


# -- each model's description: every check reads the model's own class, so a new model needs no edit here ------
def options_for(kind) -> dict:
    """Small, quick settings for any model (n_clusters only where the model has clusters)."""
    return dict(n_clusters=4) if "n_clusters" in MODELS[kind].uses() else {}


def check_model_description(kind):
    """What every model must declare, read off its class (tests/test_new_model.py runs this on a model of its own)."""
    model = MODELS[kind]
    assert issubclass(model, Model) and model.kind == kind
    assert set(model.defaults) <= set(CONFIG_FIELDS)
    assert {"epochs", "latent_dim", "batch_size", "lr"} <= set(model.defaults)
    assert set(model.measures) <= set(evaluation.MEASURES)
    parameters = list(inspect.signature(model.__init__).parameters.values())[1:]
    assert all(p.kind == p.KEYWORD_ONLY for p in parameters), f"{kind}: constructor arguments must be keyword-only"
    for p in parameters:  # each keyword is an option (filled from the config) or has a default of its own
        assert p.name in CONFIG_FIELDS or p.default is not p.empty, f"{kind}: {p.name} is no TrainConfig option"
    for name in model.uses():
        if name in MODEL_OPTIONS and name not in model.defaults:  # used without a recommended value: None must do
            assert inspect.signature(model.__init__).parameters.get(name, inspect.Parameter(
                name, inspect.Parameter.KEYWORD_ONLY, default=None)).default is None, f"{kind}: {name} needs a default"
    built = model.from_config(TrainConfig(model=kind, hidden=HIDDEN, **options_for(kind)).resolved())
    for phase in model.phases().values():
        assert phase.lr in CONFIG_FIELDS
        assert all(isinstance(getattr(built, part), torch.nn.Module) for part in phase.modules)


@pytest.mark.parametrize("kind", MODELS)
def test_every_model_is_described(kind):
    check_model_description(kind)


def check_phases_update_only_their_parameters(kind, data, **options):
    """One training step: each phase's loss reaches only the parameters of the submodules that phase declares (the
    discriminator phase never reaches the encoder: no_grad; the generator phase never the discriminator: frozen), every
    parameter belongs to some phase, and every declared phase runs."""
    trainer = Trainer(TrainConfig(model=kind, epochs=1, **options_for(kind), **options), data)
    model = trainer.model
    declared = {name: {id(p) for part in phase.modules for p in getattr(model, part).parameters()}
                for name, phase in model.phases().items()}
    assert set().union(*declared.values()) == {id(p) for p in model.parameters()}  # nothing built and never trained
    reached, real_update = {}, trainer.update

    def update(phase, loss):
        model.zero_grad(set_to_none=True)  # the phase's own update zeroes only its own parameters
        result = real_update(phase, loss)
        reached[phase] = {id(p) for p in model.parameters() if p.grad is not None}
        return result

    trainer.update = update
    x, y = data.train_images[:50], data.train_labels[:50]
    model.train()
    losses = model.training_step(x, y, trainer)
    assert set(reached) == set(declared) and set(declared) <= set(losses)
    for phase, ids in reached.items():
        assert ids and ids <= declared[phase], f"{kind}: the {phase} phase reaches parameters it must not change"
    assert all(p.requires_grad for p in model.parameters())  # frozen() gave them back


@pytest.mark.parametrize("kind", MODELS)
def test_each_phase_updates_only_its_own_parameters(kind, tiny_mnist, tiny_options):
    check_phases_update_only_their_parameters(kind, tiny_mnist, **tiny_options)


def test_supervised_aae_builds_one_decoder():
    saae, aae = SupervisedAAE(latent_dim=2, hidden=HIDDEN), AdversarialAutoencoder(latent_dim=2, hidden=HIDDEN)
    extra = 10 * HIDDEN[0]  # the one-hot label's weights into the decoder's first layer
    assert sum(p.numel() for p in saae.parameters()) == sum(p.numel() for p in aae.parameters()) + extra


@pytest.mark.parametrize("kind", [kind for kind, model in MODELS.items() if hasattr(model, "generate")])
def test_generate_decodes_prior_samples(kind):
    config = TrainConfig(model=kind, hidden=HIDDEN, **options_for(kind)).resolved()
    model = MODELS[kind].from_config(config)
    label_classes = model.label_classes
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


@pytest.mark.parametrize("model", [kind for kind, model in MODELS.items() if "batch_norm" in model.uses()])
def test_batch_norm_is_in_the_encoder_only_when_asked_for(model):
    """batch_norm=True: one BatchNorm1d before each hidden ReLU of the encoder's trunk; nowhere else."""
    for batch_norm in (False, True):
        config = TrainConfig(model=model, hidden=(32, 16), batch_norm=batch_norm).resolved()
        built = MODELS[model].from_config(config)
        norms = [m for m in built.encoder.trunk.modules() if isinstance(m, torch.nn.BatchNorm1d)]
        assert [m.num_features for m in norms] == ([32, 16] if batch_norm else [])
        assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in built.modules()) == len(norms)
