"""Priors p(z) that an adversarial autoencoder imposes on its codes.

Each prior draws `sample(n, labels=None, generator=None)` points of dimension `dim`. The mixture and the swiss roll
are label-aware (as in Makhzani et al., Fig. 6): with `labels` given, sample i comes from the part of the prior
that belongs to class labels[i].
"""

import math

import torch


class Prior:
    dim: int
    n_classes: int = 0  # > 0 for priors with one region per class

    def sample(self, n, labels=None, generator=None, device="cpu"):
        raise NotImplementedError

    def log_density(self, points):
        raise NotImplementedError(f"{type(self).__name__} has no closed-form density; plot its samples instead")

    @property
    def has_density(self) -> bool:
        return type(self).log_density is not Prior.log_density

    def _check_labels(self, n, labels):
        if labels is None:
            return None
        if self.n_classes == 0:
            raise ValueError(f"{type(self).__name__} has no per-class regions: sample without labels")
        if len(labels) != n:
            raise ValueError(f"got {len(labels)} labels for {n} samples")
        if labels.min() < 0 or labels.max() >= self.n_classes:
            raise ValueError(f"labels must be in 0..{self.n_classes - 1}")
        return labels.long()


def _random_labels(n, n_classes, generator, device):
    return torch.randint(n_classes, (n,), generator=generator, device=device)


class GaussianPrior(Prior):
    """N(0, std^2 I) in `dim` dimensions."""

    def __init__(self, dim: int = 2, std: float = 1.0):
        if dim < 1 or std <= 0:
            raise ValueError(f"GaussianPrior needs dim >= 1 and std > 0, got dim={dim}, std={std}")
        self.dim, self.std = dim, std

    def sample(self, n, labels=None, generator=None, device="cpu"):
        self._check_labels(n, labels)
        return torch.randn(n, self.dim, generator=generator, device=device) * self.std

    def log_density(self, points):
        variance = self.std**2
        return -0.5 * (points.pow(2).sum(1) / variance + self.dim * math.log(2 * math.pi * variance))

    def __repr__(self):
        return f"GaussianPrior(dim={self.dim}, std={self.std})"


class MixtureOfGaussiansPrior(Prior):
    """Ten (by default) elongated 2-D Gaussians arranged like petals around the origin.

    Component k sits at angle 2*pi*k/n at distance `radius`, stretched along its radius (`radial_std`) and thin
    across it (`tangential_std`), so every class gets its own well separated region.
    """

    dim = 2

    def __init__(self, n_components=10, radius=2.0, radial_std=0.5, tangential_std=0.1):
        self.n_classes = n_components
        self.radius, self.radial_std, self.tangential_std = radius, radial_std, tangential_std
        angles = 2 * math.pi * torch.arange(n_components) / n_components
        self.directions = torch.stack([angles.cos(), angles.sin()], dim=1)  # unit radial vector per component

    def sample(self, n, labels=None, generator=None, device="cpu"):
        labels = self._check_labels(n, labels)
        if labels is None:
            labels = _random_labels(n, self.n_classes, generator, device)
        noise = torch.randn(n, 2, generator=generator, device=device)
        radial = self.directions.to(device)[labels]
        tangential = torch.stack([-radial[:, 1], radial[:, 0]], dim=1)
        along = self.radius + self.radial_std * noise[:, :1]
        across = self.tangential_std * noise[:, 1:]
        return radial * along + tangential * across

    def component_log_density(self, points):
        """(n, k): log density of each point under each component alone."""
        directions = self.directions.to(points.device, points.dtype)
        along = points @ directions.T - self.radius  # (n, k) offset along each component's radius
        across = points @ torch.stack([-directions[:, 1], directions[:, 0]], dim=1).T
        log_normal = -0.5 * ((along / self.radial_std) ** 2 + (across / self.tangential_std) ** 2)
        return log_normal - math.log(2 * math.pi * self.radial_std * self.tangential_std)

    def log_density(self, points):
        return torch.logsumexp(self.component_log_density(points), dim=1) - math.log(self.n_classes)

    def __repr__(self):
        return f"MixtureOfGaussiansPrior(n_components={self.n_classes}, radius={self.radius})"


class SwissRollPrior(Prior):
    """A 2-D spiral; class k owns the k-th of `n_classes` equal slices of the spiral's parameter."""

    dim = 2

    def __init__(self, n_classes=10, scale=3.0, turns=2.0):
        self.n_classes, self.scale, self.turns = n_classes, scale, turns

    def sample(self, n, labels=None, generator=None, device="cpu"):
        labels = self._check_labels(n, labels)
        if labels is None:
            labels = _random_labels(n, self.n_classes, generator, device)
        return self.along(labels, torch.rand(n, generator=generator, device=device))

    def along(self, labels: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
        """The points at `position` in [0, 1) along each label's slice of the spiral (0: its inner end): (n, 2).
        `sample` draws the position uniformly; walking it in order traverses a class's piece."""
        u = (labels + position) / self.n_classes  # (n,): the spiral's parameter
        radius = u.sqrt() * self.scale
        angle = 2 * math.pi * self.turns * u.sqrt()
        return torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1)

    def __repr__(self):
        return f"SwissRollPrior(n_classes={self.n_classes})"


class CategoricalPrior(Prior):
    """One-hot vectors of a uniformly drawn class: the prior on the semi-supervised model's label code y."""

    def __init__(self, n_classes=10):
        self.n_classes = self.dim = n_classes

    def sample(self, n, labels=None, generator=None, device="cpu"):
        labels = self._check_labels(n, labels)
        if labels is None:
            labels = _random_labels(n, self.n_classes, generator, device)
        return torch.nn.functional.one_hot(labels, self.n_classes).float()

    def __repr__(self):
        return f"CategoricalPrior(n_classes={self.n_classes})"


PRIORS = {"gaussian": GaussianPrior, "mixture": MixtureOfGaussiansPrior, "swiss_roll": SwissRollPrior}


def make_prior(name: str, dim: int = 2, std: float | None = None) -> Prior:
    """A prior by name: 'gaussian' (any dim; std defaults to 1), 'mixture' or 'swiss_roll' (2-D only, no std)."""
    if name not in PRIORS:
        raise ValueError(f"unknown prior {name!r}: choose one of {', '.join(PRIORS)}")
    if name == "gaussian":
        return GaussianPrior(dim, 1.0 if std is None else std)
    if std is not None:
        raise ValueError(f"prior_std sets the spread of the gaussian prior; the {name} prior has its own shape")
    if dim != 2:
        raise ValueError(f"the {name} prior is 2-D: use --latent-dim 2 (got {dim})")
    return PRIORS[name]()
