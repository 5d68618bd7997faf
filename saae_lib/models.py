"""The networks: MLP encoder, decoder and discriminator, and the models built from them.

Sizes follow Makhzani et al. (2015) and the "Wizard's guide": 784-1000-1000-z with ReLU, a sigmoid output, and a
z-1000-1000-1 discriminator. Each model exposes `encode(x)` and `decode(z, labels=None)`; the training phases that
update them live in training.py.
"""

import torch
import torch.nn.functional as F
from torch import nn

from .data import IMAGE_PIXELS, N_CLASSES, check_images, check_labels
from .priors import CategoricalPrior, Prior, make_prior


def mlp(sizes: list[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if i < len(sizes) - 2:
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

    def __init__(self, latent_dim=10, hidden=(1000, 1000), n_classes=N_CLASSES):
        super().__init__()
        self.trunk = nn.Sequential(mlp([IMAGE_PIXELS, *hidden]), nn.ReLU())
        self.label_head = nn.Linear(hidden[-1], n_classes)
        self.style_head = nn.Linear(hidden[-1], latent_dim)

    def forward(self, x):
        features = self.trunk(x)
        return self.label_head(features), self.style_head(features)


class SupervisedClassifier(nn.Module):
    """The semi-supervised model's encoder trained on the labeled images alone: the baseline to beat."""

    kind = "supervised"

    def __init__(self, latent_dim=10, hidden=(1000, 1000), n_classes=N_CLASSES):
        super().__init__()
        self.latent_dim, self.n_classes = latent_dim, n_classes
        self.encoder = SemiSupervisedEncoder(latent_dim, hidden, n_classes)

    def classify(self, x):
        return self.encoder(check_images(x))[0].argmax(dim=1)


class Autoencoder(nn.Module):
    """Deterministic encoder and decoder trained on reconstruction alone."""

    kind = "ae"

    def __init__(self, latent_dim=2, hidden=(1000, 1000)):
        super().__init__()
        self.latent_dim = latent_dim
        self.encoder = mlp([IMAGE_PIXELS, *hidden, latent_dim])
        self.decoder = Decoder(latent_dim, hidden)

    def encode(self, x):
        return self.encoder(check_images(x))

    def decode(self, z, labels=None):
        return torch.sigmoid(self.decoder(z, labels))

    def forward(self, x, labels=None):
        return self.decode(self.encode(x), labels)


class AdversarialAutoencoder(Autoencoder):
    """An autoencoder whose codes a discriminator pushes towards samples of `prior`.

    supervised=True gives the supervised AAE: the decoder also sees the one-hot label, so z is free to hold only
    the style. label_aware=True feeds the one-hot label to the discriminator too, which then matches q(z | y) to
    p(z | y) for every class: each class's own region of a mixture or swiss-roll prior, or, for a Gaussian prior,
    the same N(0, I) for every class (the codes of no digit may sit apart).
    """

    kind = "aae"

    def __init__(self, latent_dim=2, hidden=(1000, 1000), prior: Prior | None = None, supervised=False,
                 label_aware=False):
        super().__init__(latent_dim, hidden)
        self.prior = prior if prior is not None else make_prior("gaussian", latent_dim)
        if self.prior.dim != latent_dim:
            raise ValueError(f"prior is {self.prior.dim}-D but latent_dim is {latent_dim}")
        if label_aware and self.prior.n_classes not in (0, N_CLASSES):
            raise ValueError(f"label_aware needs a prior with {N_CLASSES} regions (one per digit), not {self.prior}")
        if supervised:
            self.kind = "saae"
            self.decoder = Decoder(latent_dim, hidden, n_classes=N_CLASSES)
        self.label_aware = label_aware
        self.discriminator = mlp([latent_dim + (N_CLASSES if label_aware else 0), *hidden, 1])

    def discriminate(self, z, labels=None):
        if self.label_aware:
            z = torch.cat([z, F.one_hot(labels, N_CLASSES).to(z.dtype)], dim=1)
        return self.discriminator(z)


class SemiSupervisedAAE(nn.Module):
    """Label code y (softmax over n_classes, matched to a categorical prior) plus style code z (matched to a
    Gaussian); the decoder reconstructs from [y, z]. With n_classes clusters and no labels it clusters."""

    kind = "semi"

    def __init__(self, latent_dim=10, hidden=(1000, 1000), n_classes=N_CLASSES, prior_std=1.0):
        super().__init__()
        self.latent_dim, self.n_classes = latent_dim, n_classes
        self.encoder = SemiSupervisedEncoder(latent_dim, hidden, n_classes)
        self.decoder = Decoder(latent_dim, hidden, n_classes=n_classes)
        self.prior = make_prior("gaussian", latent_dim, prior_std)
        self.label_prior = CategoricalPrior(n_classes)
        self.style_discriminator = mlp([latent_dim, *hidden, 1])
        self.label_discriminator = mlp([n_classes, *hidden, 1])

    def encode(self, x):
        """(softmax label probabilities, style z)."""
        logits, z = self.encoder(check_images(x))
        return logits.softmax(dim=1), z

    def classify(self, x):
        return self.encoder(check_images(x))[0].argmax(dim=1)

    def decode(self, z, labels):
        return torch.sigmoid(self.decoder(z, labels))

    def forward(self, x):
        y, z = self.encode(x)
        return self.decode(z, y)
