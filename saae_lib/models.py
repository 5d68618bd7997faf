"""The models: one class each, and each class is that model's whole description.

Every model is a `Model` (below), which states what a model declares and what it may offer. In short, a class says
  - its name (`kind`), its recommended settings (`defaults`) and the numbers that describe it (`measures`),
  - how it is built: `__init__` takes every option the model uses as a keyword (the options themselves are declared
    once, in training.TrainConfig); `from_config` passes them from a TrainConfig,
  - which submodules each training phase updates, and which option sets that phase's learning rate (`phases`),
  - its training step (`training_step`): the phases in order, each one loss and one optimizer update,
  - what it can do: `encode`, `decode`, `reconstruct`, `generate`, `classify` (only what applies).
The options a model uses are read off its constructor and its phases (`Model.uses`), so a subclass inherits them.
`MODELS` maps each model's name to its class; every class here with a `kind` is in it, so a new model is one class.

Sizes follow Makhzani et al. (2015) and the "Wizard's guide": 784-1000-1000-z with ReLU, a sigmoid output, and a
z-1000-1000-1 discriminator. The training loop that calls `training_step` is in training.py; the step gets the
trainer for what every model shares: `update(phase, loss)`, `autocast()`, `sample_prior`, and its `generator`.
"""

import inspect
import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .corruptions import random_corruptions
from .data import IMAGE_PIXELS, N_CLASSES, check_images, check_labels, labeled_subset
from .priors import CategoricalPrior, GaussianPrior, Prior, make_prior
from .settings import ConfigError

# Batches of 500 (not the paper's 100) keep a 2-core CPU near its peak; the learning rates are doubled to match.
# All phases share one learning rate, as in the reference implementation (the results page says what was tried).
_ADVERSARIAL = dict(batch_size=500, lr=2e-3, adversarial_lr=2e-3)


# -- building blocks -------------------------------------------------------------------------------------------
def mlp(sizes: list[int], batch_norm=False) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last); batch_norm: BatchNorm1d before each ReLU."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
            if batch_norm:
                layers.append(nn.BatchNorm1d(n_out))
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class Encoder(nn.Sequential):
    """x (n, 784) -> code z (n, latent_dim): 784-hidden-...-z with ReLU between the layers."""

    def __init__(self, *, latent_dim: int, hidden: tuple[int, ...]):
        super().__init__(*mlp([IMAGE_PIXELS, *hidden, latent_dim]))
        self.in_features, self.latent_dim = IMAGE_PIXELS, latent_dim


class Discriminator(nn.Sequential):
    """A code (with a one-hot label beside it, for D(z, y)) -> one logit: "is this a sample of the prior?"."""

    def __init__(self, *, in_features: int, hidden: tuple[int, ...]):
        super().__init__(*mlp([in_features, *hidden, 1]))
        self.in_features = in_features


class Decoder(nn.Module):
    """z (optionally with a one-hot label in front: the supervised AAE's 10 + 2 inputs) -> pixel logits."""

    def __init__(self, *, latent_dim: int, hidden: tuple[int, ...], n_classes: int = 0):
        super().__init__()
        self.n_classes, self.in_features = n_classes, n_classes + latent_dim
        self.net = mlp([n_classes + latent_dim, *hidden, IMAGE_PIXELS])

    def forward(self, z, labels=None):
        if self.n_classes:
            if labels is None:
                raise ValueError("this decoder is conditioned on the digit: pass labels (or one-hot vectors)")
            if labels.dim() == 1:
                labels = F.one_hot(check_labels(labels, self.n_classes), self.n_classes).to(z.dtype)
            z = torch.cat([labels.to(z.dtype), z], dim=1)  # B, n_classes + latent_dim
        elif labels is not None:
            raise ValueError("this decoder is not conditioned on labels: call it without them")
        return self.net(z)  # B, 784


class SemiSupervisedEncoder(nn.Module):
    """x -> (label logits y, style z): a shared trunk with two heads (Makhzani et al., Fig. 8)."""

    def __init__(self, *, latent_dim: int, hidden: tuple[int, ...], n_classes: int = N_CLASSES, batch_norm=False):
        super().__init__()
        last = [nn.BatchNorm1d(hidden[-1])] if batch_norm else []
        self.trunk = nn.Sequential(mlp([IMAGE_PIXELS, *hidden], batch_norm), *last, nn.ReLU())
        self.label_head = nn.Linear(hidden[-1], n_classes)
        self.style_head = nn.Linear(hidden[-1], latent_dim)

    def forward(self, x, *, hidden_noise: float = 0.0, generator=None):
        """hidden_noise: std of Gaussian noise added after each hidden ReLU (training phases only; Ladder networks
        and Improved GAN regularise MLP classifiers of few labels this way)."""
        if not hidden_noise:
            features = self.trunk(x)  # B, hidden[-1]
        else:
            features = x
            for layer in self.trunk.modules():  # the layers in order, inside the nested Sequentials
                if not isinstance(layer, nn.Sequential):
                    features = layer(features)
                    if isinstance(layer, nn.ReLU):
                        features = noisy(features, hidden_noise, generator)
        return self.label_head(features), self.style_head(features)  # (B, n_classes), (B, latent_dim)


# -- losses ----------------------------------------------------------------------------------------------------
def reconstruction_loss(logits, x):
    """Binary cross-entropy between the decoder's logits and the images, averaged over the batch AND the 784 pixels.

        L = -1/(B * 784) sum_i sum_p [x_ip log sigmoid(l_ip) + (1 - x_ip) log(1 - sigmoid(l_ip))]

    The mean over pixels makes it 784 times smaller than the per-image log-likelihood -log p(x | z). Every loss in
    this library is on that per-pixel scale; a term defined per image (a VAE's KL divergence, say) must be divided by
    784 (IMAGE_PIXELS) to get the weight it has in the per-image objective.
    """
    return F.binary_cross_entropy_with_logits(logits.float(), x)


def bce(logits, target: float):
    """Binary cross-entropy of discriminator logits against one target for the whole batch (1 real, 0 fake)."""
    return F.binary_cross_entropy_with_logits(logits.float(), torch.full_like(logits, target, dtype=torch.float32))


def balance_penalty(probabilities):
    """log K - H(mean of the batch's category probabilities): 0 when the batch uses all K categories equally.

    A batch-level view of category use (CatGAN's marginal entropy). The categorical discriminator does react to how
    often each category is used, but only through its slow game with the encoder; this term gives the encoder a
    direct, immediate gradient against piling the batch onto a few categories.
    """
    mean = probabilities.float().mean(dim=0)
    return math.log(len(mean)) + (mean * mean.clamp_min(1e-12).log()).sum()


@contextmanager
def frozen(*modules):
    """Skip weight gradients of modules that a phase must not update (the generator phase's discriminator)."""
    params = [p for m in modules for p in m.parameters()]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def noisy(x, std: float, generator):
    """x + N(0, std^2) noise on every pixel (drawn from the run's generator), or x itself when std is 0."""
    if not std:
        return x
    return x + std * torch.randn(x.shape, generator=generator, device=x.device)


def dropped(x, fraction: float, generator):
    """Inverted dropout of input pixels: each set to 0 with probability `fraction` (drawn from the run's generator),
    the rest scaled by 1 / (1 - fraction); x itself when fraction is 0."""
    if not fraction:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= fraction
    return x * keep / (1 - fraction)


def check_label_aware(prior: Prior, label_aware: bool) -> None:
    if label_aware and prior.n_classes not in (0, N_CLASSES):
        raise ConfigError("label_aware", f"label_aware needs a prior with {N_CLASSES} regions (one per digit), not "
                                         f"{prior}")


# -- what every model declares and may offer -------------------------------------------------------------------
@dataclass(frozen=True)
class Phase:
    """One optimizer of a training step: the submodules it updates (attribute names) and the option (a TrainConfig
    field) that sets its learning rate."""

    modules: tuple[str, ...]
    lr: str = "lr"


class Model(nn.Module):
    """What every model declares (class attributes and `phases`, `training_step`) and what it may offer.

    Declares:
      kind          its name in MODELS and on the command line
      defaults      its full recipe: TrainConfig fields -> values, what the method reaches (what --help shows)
      recipes       other recipes as changes to `defaults`: "quick", what a 2-core CPU trains in a few minutes
                    (a model without one trains its full recipe there too)
      measures      the numbers that describe it (names in evaluation.MEASURES)
      label_classes > 0: its decoder takes one of this many labels (categories) besides z
      training_only submodules that only training uses (discriminators the shipped models leave out)
      phases()      phase name -> Phase: the submodules each optimizer updates, and its learning-rate option
      training_step(x, y, trainer) -> {loss name: loss}: one batch, each phase one `trainer.update(phase, loss)`
    Its options are the keyword-only parameters of its `__init__` that are TrainConfig fields, plus its phases'
    learning rates (`uses`); `from_config` passes them.
    May offer (the command line and evaluation look for them): encode(x) -> z, decode(z[, labels]) -> images,
      reconstruct(x[, labels]), generate(n, labels, generator), classify(x) -> (n,) indices,
      label_probabilities(x) -> (n, classes); and prepare(data, seed=...) to take what it needs from the data once.
    """

    kind: str
    defaults: dict = {}
    recipes: dict[str, dict] = {}
    measures: tuple[str, ...] = ()
    label_classes: int = 0
    training_only: tuple[str, ...] = ()

    @classmethod
    def phases(cls) -> dict[str, Phase]:
        raise NotImplementedError(f"{cls.__name__} must say which submodules each training phase updates")

    def training_step(self, x, y, trainer) -> dict:
        raise NotImplementedError(f"{type(self).__name__} must define its training step")

    def prepare(self, data, *, seed: int) -> None:
        """Take what the training step needs from the training data, once, before the first step (nothing here)."""

    @classmethod
    def keywords(cls) -> tuple[str, ...]:
        """Its constructor's keyword-only parameters."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return tuple(p.name for p in parameters if p.kind == p.KEYWORD_ONLY)

    @classmethod
    def uses(cls) -> tuple[str, ...]:
        """The names it reads from a TrainConfig: its constructor's keywords and its phases' learning rates."""
        return tuple(dict.fromkeys([*cls.keywords(), *(phase.lr for phase in cls.phases().values())]))

    @classmethod
    def from_config(cls, config) -> "Model":
        """The model a resolved TrainConfig describes: each constructor keyword that is a config field, from it."""
        return cls(**{name: getattr(config, name) for name in cls.keywords() if hasattr(config, name)})


class SamplesCodes:
    """`generate` for every model with a decoder and a code prior (mixed into the model classes below)."""

    @torch.no_grad()
    def generate(self, n, labels=None, generator=None):
        """n images decoded from codes z ~ code_prior(); returns (images, labels or None).

        Models with label_classes > 0 decode each z with a label: `labels` (n,) if given, else drawn uniformly."""
        device = next(self.parameters()).device
        if labels is not None and not self.label_classes:
            raise ValueError(f"the {self.kind} model's decoder takes no label")
        z = self.code_prior().sample(n, generator=generator)
        if not self.label_classes:
            return self.decode(z.to(device)), None
        if labels is None:
            labels = torch.randint(self.label_classes, (n,), generator=generator)
        labels = check_labels(labels.cpu(), self.label_classes)
        return self.decode(z.to(device), labels.to(device)), labels


# -- the models ------------------------------------------------------------------------------------------------
class Autoencoder(SamplesCodes, Model):
    """Deterministic encoder and decoder trained on reconstruction alone."""

    kind = "ae"
    defaults = dict(epochs=15, latent_dim=2, batch_size=500, lr=2e-3)
    measures = ("reconstruction", "prior_match")

    def __init__(self, *, latent_dim: int, hidden: tuple[int, ...]):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = Encoder(latent_dim=latent_dim, hidden=hidden)
        self.decoder = Decoder(latent_dim=latent_dim, hidden=hidden, n_classes=self.label_classes)

    @classmethod
    def phases(cls) -> dict[str, Phase]:
        return {"reconstruction": Phase(("encoder", "decoder"), lr="lr")}

    def training_step(self, x, y, trainer) -> dict:
        with trainer.autocast():
            loss = reconstruction_loss(self.decoder(self.encoder(x)), x)
        return {"reconstruction": trainer.update("reconstruction", loss)}

    # -- what it can do -----------------------------------------------------------------------------------------
    def code_prior(self) -> Prior:
        """The distribution codes are sampled from and compared with. An autoencoder has no prior of its own: the
        standard Gaussian stands in (the AAE's default prior)."""
        return GaussianPrior(self.latent_dim)

    def encode(self, x):
        return self.encoder(check_images(x))

    def decode(self, z, labels=None):
        return torch.sigmoid(self.decoder(z, labels))

    def reconstruct(self, x, labels=None):
        """Decoded codes of x. `labels` are used only by models whose decoder takes them."""
        return self.decode(self.encode(x))

    def forward(self, x, labels=None):
        return self.reconstruct(x, labels)


class DenoisingAutoencoder(Autoencoder):
    """An autoencoder that learns to undo corruptions: it encodes a corrupted image and is scored on the clean one.

    "A good representation is one that can be obtained robustly from a corrupted input and that will be useful for
    recovering the corresponding clean input" (Vincent et al., 2008). The loss is the autoencoder's, with the clean
    image as the target:  L = BCE(dec(enc(c(x))), x),  c a random corruption. Each training image gets one of
    Gaussian noise, salt and pepper or a zeroed square, at a level drawn up to `corruption` (corruptions.py), so one
    model undoes all three at every level up to those (a blind denoiser); evaluation sees what it is given.
    """

    kind = "dae"
    defaults = dict(epochs=20, latent_dim=32, batch_size=500, lr=2e-3)
    # The largest level of each kind it trains on: chapter 5 tests it up to these, and no further.
    corruption = dict(max_std=0.7, max_fraction=0.3, max_block=16)

    def training_step(self, x, y, trainer) -> dict:
        corrupted = random_corruptions(x, trainer.generator, **self.corruption)  # B, 784
        with trainer.autocast():
            loss = reconstruction_loss(self.decoder(self.encoder(corrupted)), x)
        return {"reconstruction": trainer.update("reconstruction", loss)}


class AdversarialAutoencoder(Autoencoder):
    """An autoencoder whose codes a discriminator pushes towards samples of `prior`.

    label_aware=True feeds the one-hot label to the discriminator too, which then matches q(z | y) to p(z | y) for
    every class: each class's own region of a mixture or swiss-roll prior, or, for a Gaussian prior, the same
    N(0, I) for every class (the codes of no digit may sit apart).
    """

    kind = "aae"
    # The cosine decay ends the adversarial game at rest instead of mid-swing (results page, "What it takes").
    defaults = dict(epochs=15, latent_dim=2, prior="gaussian", label_aware=False, lr_schedule="cosine", **_ADVERSARIAL)
    measures = ("reconstruction", "prior_match", "component_match")  # the last: label-aware mixtures only

    def __init__(self, *, latent_dim: int, hidden: tuple[int, ...], prior: str | Prior = "gaussian",
                 prior_std: float | None = None, label_aware: bool = False,
                 discriminator_hidden: tuple[int, ...] | None = None):
        super().__init__(latent_dim=latent_dim, hidden=hidden)
        self.prior = make_prior(prior, latent_dim, prior_std) if isinstance(prior, str) else prior
        if self.prior.dim != latent_dim:
            raise ConfigError("latent_dim", f"prior is {self.prior.dim}-D but latent_dim is {latent_dim}")
        check_label_aware(self.prior, label_aware)
        self.label_aware = label_aware
        self.discriminator = Discriminator(in_features=latent_dim + (N_CLASSES if label_aware else 0),
                                           hidden=discriminator_hidden or hidden)

    @classmethod
    def phases(cls) -> dict[str, Phase]:
        return {"reconstruction": Phase(("encoder", "decoder"), lr="lr"),
                "discriminator": Phase(("discriminator",), lr="adversarial_lr"),
                "generator": Phase(("encoder",), lr="adversarial_lr")}

    def code_prior(self) -> Prior:
        return self.prior

    def discriminate(self, z, labels=None):
        if self.label_aware:
            z = torch.cat([z, F.one_hot(labels, N_CLASSES).to(z.dtype)], dim=1)  # B, latent_dim + 10
        return self.discriminator(z)  # B, 1

    def decoder_labels(self, y):
        """What the decoder gets besides z during training: nothing here (the supervised AAE: the one-hot label)."""
        return None

    def training_step(self, x, y, trainer) -> dict:
        conditioning = self.decoder_labels(y)
        discriminator_labels = y if self.label_aware else None
        prior_labels = discriminator_labels if self.prior.n_classes else None  # a Gaussian is the same for all

        # 1. Reconstruction: encoder and decoder.
        with trainer.autocast():
            reconstruction = reconstruction_loss(self.decoder(self.encoder(x), conditioning), x)
        trainer.update("reconstruction", reconstruction)

        # 2. Discriminator: samples of the prior are "real", the encoder's codes are "fake".
        real = trainer.sample_prior(self.prior, len(x), prior_labels)
        with trainer.autocast():
            with torch.no_grad():
                fake = self.encoder(x)
            discriminator = bce(self.discriminate(real, discriminator_labels), 1.0) + bce(
                self.discriminate(fake, discriminator_labels), 0.0)
        trainer.update("discriminator", discriminator)

        # 3. Generator: the encoder learns to make codes the discriminator calls real.
        with trainer.autocast(), frozen(self.discriminator):
            generator = bce(self.discriminate(self.encoder(x), discriminator_labels), 1.0)
        trainer.update("generator", generator)
        return {"reconstruction": reconstruction, "discriminator": discriminator, "generator": generator}


class SupervisedAAE(AdversarialAutoencoder):
    """The supervised AAE: the decoder also gets the one-hot label, so z is free to hold only the style."""

    kind = "saae"
    defaults = dict(AdversarialAutoencoder.defaults)
    measures = ("reconstruction", "prior_match", "component_match", "generated_digits")
    label_classes = N_CLASSES

    def decoder_labels(self, y):
        return F.one_hot(y, N_CLASSES).float()

    def reconstruct(self, x, labels=None):
        if labels is None:
            raise ValueError("the supervised AAE reconstructs from (label, z): pass the labels")
        return self.decode(self.encode(x), labels)


class LabeledSubset:
    """For models that learn from a few labels: `prepare` picks the class-balanced labeled subset (self.labeled),
    `labeled_cross_entropy` is the classification phase on a batch drawn from it."""

    def prepare(self, data, *, seed: int) -> None:
        try:
            index = labeled_subset(data.train_labels, self.n_labels, seed=seed)
        except ValueError as error:
            raise ConfigError("n_labels", f"{error}: the {len(data.train_labels)} training images cannot supply "
                                          f"n_labels={self.n_labels}; ask for fewer labels") from None
        index = index.to(data.train_images.device)
        self.labeled = (data.train_images[index], data.train_labels[index])  # (n_labels, 784), (n_labels,)

    def labeled_cross_entropy(self, trainer, n):
        """The classification phase: cross-entropy on n images drawn from the small labeled subset."""
        images, labels = self.labeled
        n = min(n, len(images))
        pick = torch.randint(len(images), (n,), generator=trainer.generator, device=images.device)
        with trainer.autocast():
            logits = self.corrupted_codes(images[pick], trainer.generator)[0]  # B, n_classes
            classification = F.cross_entropy(logits.float(), labels[pick])
        return {"classification": trainer.update("classification", classification)}


class CorruptedInputs:
    """For models whose encoder trains on corrupted images (the label-learning models): input dropout, then
    Gaussian noise on the pixels, then (optionally) noise on the hidden layers; evaluation sees clean images."""

    def corrupted_codes(self, x, generator):
        """The encoder's outputs in a training phase: x with `input_dropout` and `input_noise`, noise of std
        `hidden_noise` after each hidden layer."""
        x = noisy(dropped(x, self.input_dropout, generator), self.input_noise, generator)
        return self.encoder(x, hidden_noise=self.hidden_noise, generator=generator)


def check_balanced_subset(n_labels: int) -> None:
    if n_labels % N_CLASSES:
        raise ConfigError("n_labels", f"n_labels must be a multiple of {N_CLASSES} (a class-balanced subset), got "
                                      f"{n_labels}")


class SemiSupervisedAAE(LabeledSubset, CorruptedInputs, SamplesCodes, Model):
    """Label code y (softmax over n_classes, matched to a categorical prior) plus style code z (matched to a
    Gaussian); the decoder reconstructs from [y, z]. A labeled batch in every step teaches y the digits."""

    kind = "semi"
    # The categorical discriminator needs a stronger generator phase than the 2-D AAEs: adversarial_lr 1e-3.
    # Full: 150 epochs with batch norm and a cosine decay (H200, 3 seeds: 2.62 +- 0.70 % test error with 100 labels;
    # results page); quick: the same over 40 epochs (results page, "What it takes").
    defaults = dict(epochs=150, latent_dim=10, n_labels=100, input_noise=0.3, input_dropout=0.0, hidden_noise=0.0,
                    balance=0.0, batch_norm=True, lr_schedule="cosine", **_ADVERSARIAL | {"adversarial_lr": 1e-3})
    recipes = {"quick": dict(epochs=40)}
    measures = ("reconstruction", "classification", "generated_digits")
    # Its two discriminators are 4 of its 11 MB in float16 and nothing after training calls them: the shipped
    # (pretrained) models leave them out, which keeps all the book's shipped models under 80 MB.
    training_only = ("style_discriminator", "label_discriminator")

    def __init__(self, *, latent_dim: int, hidden: tuple[int, ...], n_labels: int, input_noise: float,
                 input_dropout: float, hidden_noise: float, balance: float, batch_norm: bool,
                 prior_std: float | None = None, discriminator_hidden: tuple[int, ...] | None = None,
                 n_classes: int = N_CLASSES):
        super().__init__()
        if n_labels is not None:  # None: a model of categories without labels (ClusteringAAE)
            check_balanced_subset(n_labels)
        self.latent_dim, self.n_classes, self.n_labels = latent_dim, n_classes, n_labels
        self.input_noise, self.input_dropout, self.hidden_noise = input_noise, input_dropout, hidden_noise
        self.balance = balance
        self.encoder = SemiSupervisedEncoder(latent_dim=latent_dim, hidden=hidden, n_classes=n_classes,
                                             batch_norm=batch_norm)
        self.decoder = Decoder(latent_dim=latent_dim, hidden=hidden, n_classes=n_classes)
        self.prior = make_prior("gaussian", latent_dim, prior_std)
        self.label_prior = CategoricalPrior(n_classes)
        self.style_discriminator = Discriminator(in_features=latent_dim, hidden=discriminator_hidden or hidden)
        self.label_discriminator = Discriminator(in_features=n_classes, hidden=discriminator_hidden or hidden)

    @property
    def label_classes(self):
        return self.n_classes

    @classmethod
    def phases(cls) -> dict[str, Phase]:
        return {"reconstruction": Phase(("encoder", "decoder"), lr="lr"),
                "discriminator": Phase(("style_discriminator", "label_discriminator"), lr="adversarial_lr"),
                "generator": Phase(("encoder",), lr="adversarial_lr"),
                "classification": Phase(("encoder",), lr="lr")}

    def adversarial_phases(self, x, trainer) -> dict:
        # 1. Reconstruction through [softmax(y), z].
        with trainer.autocast():
            logits, z = self.corrupted_codes(x, trainer.generator)  # (B, n_classes), (B, latent_dim)
            reconstruction = reconstruction_loss(self.decoder(z, logits.softmax(1)), x)
        trainer.update("reconstruction", reconstruction)

        # 2. Both discriminators: one-hot samples vs softmax outputs, Gaussian samples vs style codes.
        real_y = trainer.sample_prior(self.label_prior, len(x))
        real_z = trainer.sample_prior(self.prior, len(x))
        with trainer.autocast():
            with torch.no_grad():
                logits, z = self.corrupted_codes(x, trainer.generator)
            discriminator = (bce(self.label_discriminator(real_y), 1.0)
                             + bce(self.label_discriminator(logits.softmax(1)), 0.0)
                             + bce(self.style_discriminator(real_z), 1.0) + bce(self.style_discriminator(z), 0.0))
        trainer.update("discriminator", discriminator)

        # 3. Generator: the encoder fools both (plus, with weight `balance`, the batch balance term).
        with trainer.autocast(), frozen(self.label_discriminator, self.style_discriminator):
            logits, z = self.corrupted_codes(x, trainer.generator)
            probabilities = logits.softmax(1)
            generator = bce(self.label_discriminator(probabilities), 1.0) + bce(self.style_discriminator(z), 1.0)
            imbalance = balance_penalty(probabilities)
        trainer.update("generator", generator + self.balance * imbalance if self.balance else generator)
        return {"reconstruction": reconstruction, "discriminator": discriminator, "generator": generator,
                "imbalance": imbalance}

    def training_step(self, x, y, trainer) -> dict:
        losses = self.adversarial_phases(x, trainer)
        # 4. Semi-supervised: cross-entropy on a batch of the labeled subset (the labels y of x are not used).
        losses.update(self.labeled_cross_entropy(trainer, len(x)))
        return losses

    # -- what it can do -----------------------------------------------------------------------------------------
    def code_prior(self) -> Prior:
        return self.prior

    def encode(self, x):
        """The style code z."""
        return self.encoder(check_images(x))[1]

    def label_probabilities(self, x):
        """q(y | x): softmax over the categories."""
        return self.encoder(check_images(x))[0].softmax(dim=1)

    def classify(self, x):
        return self.encoder(check_images(x))[0].argmax(dim=1)

    def decode(self, z, labels):
        """Images from style z and a category: indices (n,) or probability vectors (n, n_classes)."""
        return torch.sigmoid(self.decoder(z, labels))

    def reconstruct(self, x, labels=None):
        """Decoded [q(y | x), z]; the true labels are not used."""
        logits, z = self.encoder(check_images(x))
        return self.decode(z, logits.softmax(1))

    def forward(self, x):
        return self.reconstruct(x)


class ClusteringAAE(SemiSupervisedAAE):
    """The semi-supervised model without labels: n_clusters categories play the clusters, kept in use by the batch
    balance term (not in the paper; see chapter 4). `classify` returns a cluster, not a digit."""

    kind = "cluster"
    # Without the balance term the clustering collapses onto a few categories (results page, "what was tried").
    # Full: 150 epochs with a cosine decay (H200, seed 0: 20.0 % test error; results page); quick: 20 epochs at
    # constant rates (the decay and batch norm bought nothing at that length).
    defaults = dict(epochs=150, latent_dim=5, n_clusters=16, input_noise=0.3, input_dropout=0.0, hidden_noise=0.0,
                    balance=10.0, batch_norm=False, lr_schedule="cosine", **_ADVERSARIAL | {"adversarial_lr": 1e-3})
    recipes = {"quick": dict(epochs=20, lr_schedule="constant")}
    measures = ("reconstruction", "clustering")

    def __init__(self, *, latent_dim: int, hidden: tuple[int, ...], n_clusters: int, input_noise: float,
                 input_dropout: float, hidden_noise: float, balance: float, batch_norm: bool,
                 prior_std: float | None = None, discriminator_hidden: tuple[int, ...] | None = None):
        super().__init__(latent_dim=latent_dim, hidden=hidden, n_labels=None, input_noise=input_noise,
                         input_dropout=input_dropout, hidden_noise=hidden_noise, balance=balance,
                         batch_norm=batch_norm, prior_std=prior_std,
                         discriminator_hidden=discriminator_hidden, n_classes=n_clusters)

    @classmethod
    def phases(cls) -> dict[str, Phase]:
        phases = super().phases()
        del phases["classification"]  # no labels
        return phases

    def prepare(self, data, *, seed: int) -> None:
        """No labeled subset."""

    def training_step(self, x, y, trainer) -> dict:
        return self.adversarial_phases(x, trainer)


class SupervisedClassifier(LabeledSubset, CorruptedInputs, Model):
    """The semi-supervised model's encoder trained on the labeled images alone: the baseline to beat."""

    kind = "supervised"
    # One recipe: with 100 labels its validation error turns up again after about 15 epochs (chapter 4).
    defaults = dict(epochs=20, latent_dim=10, n_labels=100, input_noise=0.3, input_dropout=0.0, hidden_noise=0.0,
                    batch_norm=False, batch_size=500, lr=2e-3)
    measures = ("classification",)

    def __init__(self, *, latent_dim: int, hidden: tuple[int, ...], n_labels: int, input_noise: float,
                 input_dropout: float, hidden_noise: float, batch_norm: bool, n_classes: int = N_CLASSES):
        super().__init__()
        check_balanced_subset(n_labels)
        self.latent_dim, self.n_classes, self.n_labels = latent_dim, n_classes, n_labels
        self.input_noise, self.input_dropout, self.hidden_noise = input_noise, input_dropout, hidden_noise
        self.encoder = SemiSupervisedEncoder(latent_dim=latent_dim, hidden=hidden, n_classes=n_classes,
                                             batch_norm=batch_norm)

    @classmethod
    def phases(cls) -> dict[str, Phase]:
        return {"classification": Phase(("encoder",), lr="lr")}

    def training_step(self, x, y, trainer) -> dict:
        return self.labeled_cross_entropy(trainer, len(x))  # the unlabeled batch itself is not used

    def classify(self, x):
        return self.encoder(check_images(x))[0].argmax(dim=1)


# Every model class of this file that names its `kind`, in the order they are defined (keep this last: a class
# defined below it would not be registered). A new model is one class above this line, and nothing else.
MODELS = {cls.kind: cls for cls in list(vars().values())
          if isinstance(cls, type) and issubclass(cls, Model) and "kind" in vars(cls)}
