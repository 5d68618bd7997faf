"""The models: one class each, and each class is that model's whole description.

A model class says
  - how it is built (`__init__`, and `from_config` from a TrainConfig),
  - which options it uses (`options`) and its recommended settings (`defaults`),
  - which parameters each training phase updates, and at what learning rate (`phases`),
  - its training step (`training_step`): the phases in order, each one loss and one optimizer update,
  - what it can do: `encode`, `decode`, `reconstruct`, `generate`, `classify` (only what applies),
  - which numbers describe it (`measures`; computed by evaluation.py).
`MODELS` maps each model's name to its class; a new model is one new class here, added to `MODELS`.

Sizes follow Makhzani et al. (2015) and the "Wizard's guide": 784-1000-1000-z with ReLU, a sigmoid output, and a
z-1000-1000-1 discriminator. The training loop that calls `training_step` is in training.py; the step gets the
trainer for what every model shares: `update(phase, loss)`, `autocast()`, `sample_prior`, `noisy`, `labeled`.
"""

import math
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .data import IMAGE_PIXELS, N_CLASSES, check_images, check_labels
from .priors import CategoricalPrior, GaussianPrior, Prior, make_prior

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


class Decoder(nn.Module):
    """z (optionally with a one-hot label in front: the supervised AAE's 10 + 2 inputs) -> pixel logits."""

    def __init__(self, latent_dim=2, hidden=(1000, 1000), n_classes=0):
        super().__init__()
        self.n_classes = n_classes
        self.net = mlp([n_classes + latent_dim, *hidden, IMAGE_PIXELS])

    def forward(self, z, labels=None):
        if self.n_classes:
            if labels is None:
                raise ValueError("this decoder is conditioned on the digit: pass labels (or one-hot vectors)")
            if labels.dim() == 1:
                labels = F.one_hot(check_labels(labels, self.n_classes), self.n_classes).to(z.dtype)
            z = torch.cat([labels.to(z.dtype), z], dim=1)
        elif labels is not None:
            raise ValueError("this decoder is not conditioned on labels: call it without them")
        return self.net(z)


class SemiSupervisedEncoder(nn.Module):
    """x -> (label logits y, style z): a shared trunk with two heads (Makhzani et al., Fig. 8)."""

    def __init__(self, latent_dim=10, hidden=(1000, 1000), n_classes=N_CLASSES, batch_norm=False):
        super().__init__()
        last = [nn.BatchNorm1d(hidden[-1])] if batch_norm else []
        self.trunk = nn.Sequential(mlp([IMAGE_PIXELS, *hidden], batch_norm), *last, nn.ReLU())
        self.label_head = nn.Linear(hidden[-1], n_classes)
        self.style_head = nn.Linear(hidden[-1], latent_dim)

    def forward(self, x):
        features = self.trunk(x)
        return self.label_head(features), self.style_head(features)


# -- losses ----------------------------------------------------------------------------------------------------
def reconstruction_loss(logits, x):
    """Binary cross-entropy per pixel between the decoder's logits and the images."""
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


def labeled_cross_entropy(encoder, trainer, n):
    """The classification phase: cross-entropy on n images drawn from the small labeled subset (trainer.labeled)."""
    images, labels = trainer.labeled
    n = min(n, len(images))
    pick = torch.randint(len(images), (n,), generator=trainer.generator, device=images.device)
    with trainer.autocast():
        classification = F.cross_entropy(encoder(trainer.noisy(images[pick]))[0].float(), labels[pick])
    return {"classification": trainer.update("classification", classification)}


def check_label_aware(prior: Prior, label_aware: bool) -> None:
    if label_aware and prior.n_classes not in (0, N_CLASSES):
        raise ValueError(f"label_aware needs a prior with {N_CLASSES} regions (one per digit), not {prior}")


def check_balanced_subset(config) -> None:
    if config.n_labels % N_CLASSES:
        raise ValueError(f"n_labels must be a multiple of {N_CLASSES} (a class-balanced subset), got {config.n_labels}")


# -- the models ------------------------------------------------------------------------------------------------
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


class Autoencoder(SamplesCodes, nn.Module):
    """Deterministic encoder and decoder trained on reconstruction alone."""

    kind = "ae"
    options = ()  # options beyond those every model has (epochs, batch_size, latent_dim, hidden, lr, ...)
    defaults = dict(epochs=15, latent_dim=2, batch_size=500, lr=2e-3)
    measures = ("reconstruction", "prior_match")
    label_classes = 0  # > 0: the decoder takes one of this many labels (categories) besides z

    def __init__(self, latent_dim=2, hidden=(1000, 1000)):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = mlp([IMAGE_PIXELS, *hidden, latent_dim])
        self.decoder = Decoder(latent_dim, hidden, n_classes=self.label_classes)

    @classmethod
    def from_config(cls, config):
        return cls(config.latent_dim, config.hidden)

    @classmethod
    def check_config(cls, config):
        """Raise ValueError for option values that do not fit together (each option is checked alone elsewhere)."""

    def phases(self, config) -> dict:
        """Phase name -> (modules whose parameters its optimizer updates, learning rate)."""
        return {"reconstruction": ([self.encoder, self.decoder], config.lr)}

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


class AdversarialAutoencoder(Autoencoder):
    """An autoencoder whose codes a discriminator pushes towards samples of `prior`.

    label_aware=True feeds the one-hot label to the discriminator too, which then matches q(z | y) to p(z | y) for
    every class: each class's own region of a mixture or swiss-roll prior, or, for a Gaussian prior, the same
    N(0, I) for every class (the codes of no digit may sit apart).
    """

    kind = "aae"
    options = ("prior", "prior_std", "label_aware", "adversarial_lr")
    # The cosine decay ends the adversarial game at rest instead of mid-swing (results page, "What it takes").
    defaults = dict(epochs=15, latent_dim=2, prior="gaussian", label_aware=False, lr_schedule="cosine", **_ADVERSARIAL)
    measures = ("reconstruction", "prior_match", "component_match")  # the last: label-aware mixtures only

    def __init__(self, latent_dim=2, hidden=(1000, 1000), prior: Prior | None = None, label_aware=False):
        super().__init__(latent_dim, hidden)
        self.prior = prior if prior is not None else GaussianPrior(latent_dim)
        if self.prior.dim != latent_dim:
            raise ValueError(f"prior is {self.prior.dim}-D but latent_dim is {latent_dim}")
        check_label_aware(self.prior, label_aware)
        self.label_aware = label_aware
        self.discriminator = mlp([latent_dim + (N_CLASSES if label_aware else 0), *hidden, 1])

    @classmethod
    def from_config(cls, config):
        prior = make_prior(config.prior, config.latent_dim, config.prior_std)
        return cls(config.latent_dim, config.hidden, prior, label_aware=config.label_aware)

    @classmethod
    def check_config(cls, config):
        check_label_aware(make_prior(config.prior, config.latent_dim, config.prior_std), config.label_aware)

    def phases(self, config) -> dict:
        return {"reconstruction": ([self.encoder, self.decoder], config.lr),
                "discriminator": ([self.discriminator], config.adversarial_lr),
                "generator": ([self.encoder], config.adversarial_lr)}

    def code_prior(self) -> Prior:
        return self.prior

    def discriminate(self, z, labels=None):
        if self.label_aware:
            z = torch.cat([z, F.one_hot(labels, N_CLASSES).to(z.dtype)], dim=1)
        return self.discriminator(z)

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


class SemiSupervisedAAE(SamplesCodes, nn.Module):
    """Label code y (softmax over n_classes, matched to a categorical prior) plus style code z (matched to a
    Gaussian); the decoder reconstructs from [y, z]. A labeled batch in every step teaches y the digits."""

    kind = "semi"
    # The categorical discriminator needs a stronger generator phase than the 2-D AAEs: adversarial_lr 1e-3.
    options = ("n_labels", "input_noise", "balance", "prior_std", "adversarial_lr", "batch_norm")
    defaults = dict(epochs=20, latent_dim=10, n_labels=100, input_noise=0.3, balance=0.0, batch_norm=False,
                    **_ADVERSARIAL | {"adversarial_lr": 1e-3})
    measures = ("reconstruction", "classification", "generated_digits")

    def __init__(self, latent_dim=10, hidden=(1000, 1000), n_classes=N_CLASSES, prior_std=None, batch_norm=False):
        super().__init__()
        self.latent_dim, self.n_classes = latent_dim, n_classes
        self.encoder = SemiSupervisedEncoder(latent_dim, hidden, n_classes, batch_norm)
        self.decoder = Decoder(latent_dim, hidden, n_classes=n_classes)
        self.prior = make_prior("gaussian", latent_dim, prior_std)
        self.label_prior = CategoricalPrior(n_classes)
        self.style_discriminator = mlp([latent_dim, *hidden, 1])
        self.label_discriminator = mlp([n_classes, *hidden, 1])

    @property
    def label_classes(self):
        return self.n_classes

    @classmethod
    def from_config(cls, config):
        return cls(config.latent_dim, config.hidden, N_CLASSES, config.prior_std, config.batch_norm)

    @classmethod
    def check_config(cls, config):
        check_balanced_subset(config)

    def phases(self, config) -> dict:
        return {"reconstruction": ([self.encoder, self.decoder], config.lr),
                "discriminator": ([self.style_discriminator, self.label_discriminator], config.adversarial_lr),
                "generator": ([self.encoder], config.adversarial_lr),
                "classification": ([self.encoder], config.lr)}

    def adversarial_phases(self, x, trainer) -> dict:
        # 1. Reconstruction through [softmax(y), z].
        with trainer.autocast():
            logits, z = self.encoder(trainer.noisy(x))
            reconstruction = reconstruction_loss(self.decoder(z, logits.softmax(1)), x)
        trainer.update("reconstruction", reconstruction)

        # 2. Both discriminators: one-hot samples vs softmax outputs, Gaussian samples vs style codes.
        real_y = trainer.sample_prior(self.label_prior, len(x))
        real_z = trainer.sample_prior(self.prior, len(x))
        with trainer.autocast():
            with torch.no_grad():
                logits, z = self.encoder(trainer.noisy(x))
            discriminator = (bce(self.label_discriminator(real_y), 1.0)
                             + bce(self.label_discriminator(logits.softmax(1)), 0.0)
                             + bce(self.style_discriminator(real_z), 1.0) + bce(self.style_discriminator(z), 0.0))
        trainer.update("discriminator", discriminator)

        # 3. Generator: the encoder fools both (plus, with weight `balance`, the batch balance term).
        with trainer.autocast(), frozen(self.label_discriminator, self.style_discriminator):
            logits, z = self.encoder(trainer.noisy(x))
            probabilities = logits.softmax(1)
            generator = bce(self.label_discriminator(probabilities), 1.0) + bce(self.style_discriminator(z), 1.0)
            imbalance = balance_penalty(probabilities)
        balance = trainer.config.balance
        trainer.update("generator", generator + balance * imbalance if balance else generator)
        return {"reconstruction": reconstruction, "discriminator": discriminator, "generator": generator,
                "imbalance": imbalance}

    def training_step(self, x, y, trainer) -> dict:
        losses = self.adversarial_phases(x, trainer)
        # 4. Semi-supervised: cross-entropy on a batch of the labeled subset (the labels y of x are not used).
        losses.update(labeled_cross_entropy(self.encoder, trainer, len(x)))
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
    options = ("n_clusters", "input_noise", "balance", "prior_std", "adversarial_lr", "batch_norm")
    # Without the balance term the clustering collapses onto a few categories (results page, "what was tried").
    defaults = dict(epochs=20, latent_dim=5, n_clusters=16, input_noise=0.3, balance=10.0, batch_norm=False,
                    **_ADVERSARIAL | {"adversarial_lr": 1e-3})
    measures = ("reconstruction", "clustering")

    @classmethod
    def from_config(cls, config):
        return cls(config.latent_dim, config.hidden, config.n_clusters, config.prior_std, config.batch_norm)

    @classmethod
    def check_config(cls, config):
        """No labeled subset to check."""

    def phases(self, config) -> dict:
        phases = super().phases(config)
        del phases["classification"]
        return phases

    def training_step(self, x, y, trainer) -> dict:
        return self.adversarial_phases(x, trainer)


class SupervisedClassifier(nn.Module):
    """The semi-supervised model's encoder trained on the labeled images alone: the baseline to beat."""

    kind = "supervised"
    options = ("n_labels", "input_noise", "batch_norm")
    defaults = dict(epochs=20, latent_dim=10, n_labels=100, input_noise=0.3, batch_norm=False, batch_size=500,
                    lr=2e-3)
    measures = ("classification",)

    def __init__(self, latent_dim=10, hidden=(1000, 1000), n_classes=N_CLASSES, batch_norm=False):
        super().__init__()
        self.latent_dim, self.n_classes = latent_dim, n_classes
        self.encoder = SemiSupervisedEncoder(latent_dim, hidden, n_classes, batch_norm)

    @classmethod
    def from_config(cls, config):
        return cls(config.latent_dim, config.hidden, batch_norm=config.batch_norm)

    @classmethod
    def check_config(cls, config):
        check_balanced_subset(config)

    def phases(self, config) -> dict:
        return {"classification": ([self.encoder], config.lr)}

    def training_step(self, x, y, trainer) -> dict:
        return labeled_cross_entropy(self.encoder, trainer, len(x))  # the unlabeled batch itself is not used

    def classify(self, x):
        return self.encoder(check_images(x))[0].argmax(dim=1)


MODELS = {cls.kind: cls for cls in (Autoencoder, AdversarialAutoencoder, SupervisedAAE, SemiSupervisedAAE,
                                    ClusteringAAE, SupervisedClassifier)}
