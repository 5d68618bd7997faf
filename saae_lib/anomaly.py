"""Anomaly detection, one class at a time: train on one digit, flag the other nine.

The protocol is Deep SVDD's (Ruff et al., 2018; OCGAN's "protocol 2"): digit d is normal, a model sees only the
training images of d, all test images are scored, and the AUROC says how well the scores put the other nine digits
above d. Every digit takes its turn; the mean over the ten is the headline number.

Scores are "higher = more anomalous", one per image, as numpy float64 arrays. An autoencoder offers its
reconstruction error; an adversarial autoencoder also offers the density of the code under the prior it was trained
to fill, which a plain autoencoder does not have. PCA's reconstruction error and the distance to the nearest
training image are the classical baselines on the same split.
"""

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_auc_score

from . import metrics
from .checkpoints import run_name, train_or_load
from .data import MNIST, N_CLASSES, check_images
from .features import as_array, as_points, fitted_pca


@dataclass
class OneClassSplit:
    """One digit's turn: it alone to train on (train_images, and val_images to watch the training), and the images
    to score: every test image, or every validation image when choosing settings (`on`)."""

    digit: int
    train_images: torch.Tensor  # the normal digit's training images
    val_images: torch.Tensor  # the normal digit's validation images
    on: str  # "test" or "validation": the split the scored images come from
    images: torch.Tensor  # every image of that split: the ones to score
    labels: torch.Tensor
    is_anomaly: torch.Tensor  # (n,) bool: label != digit

    def __repr__(self) -> str:
        return (f"OneClassSplit(digit={self.digit}, train={len(self.train_images)}, {self.on}={len(self.images)} "
                f"of which {int(self.is_anomaly.sum())} anomalies)")


SPLITS = ("test", "validation")


def one_class_split(data: MNIST, digit: int, on: str = "test") -> OneClassSplit:
    """Digit `digit` as the normal class: its training (and validation) images only, and all images of the split
    `on` to score, with is_anomaly = (label != digit). on="validation" scores the 5000 validation images instead of
    the test set: the settings of the chapter's models were chosen that way, and the test set scored once."""
    if not 0 <= digit < N_CLASSES:
        raise ValueError(f"digit must be in 0..{N_CLASSES - 1}, got {digit}")
    if on not in SPLITS:
        raise ValueError(f"on must be one of {', '.join(SPLITS)}, got {on!r}")
    normal = data.train_labels == digit
    if not normal.any():
        raise ValueError(f"the data hold no training images of digit {digit}: nothing to learn the normal class from")
    images, labels = (data.test_images, data.test_labels) if on == "test" else (data.val_images, data.val_labels)
    return OneClassSplit(digit=digit, train_images=data.train_images[normal],
                         val_images=data.val_images[data.val_labels == digit], on=on, images=images, labels=labels,
                         is_anomaly=labels != digit)


def one_class_data(data: MNIST, digit: int) -> MNIST:
    """What a model of digit `digit` trains on: that digit's training and validation images, nothing else (the test
    set stays whole: it is only ever scored)."""
    split = one_class_split(data, digit)
    return MNIST(train_images=split.train_images, train_labels=data.train_labels[data.train_labels == digit],
                 val_images=split.val_images, val_labels=data.val_labels[data.val_labels == digit],
                 test_images=data.test_images, test_labels=data.test_labels, device=data.device,
                 validation_size=data.validation_size)


def model_device(model) -> torch.device:
    return next(model.parameters()).device


def reconstruction_score(model, images, batch_size: int = 2000) -> np.ndarray:
    """Per-image mean squared error, s(x) = ||x - dec(enc(x))||^2 / 784: a model trained on one digit reconstructs
    that digit well and the others badly."""
    images = check_images(images).to(model_device(model))
    reconstructed = metrics.reconstruct(model, images, batch_size=batch_size)  # n, 784
    return (reconstructed - images).pow(2).mean(dim=1).double().cpu().numpy()


def prior_score(model, images, batch_size: int = 2000) -> np.ndarray:
    """Negative log density of the code under the model's prior, s(x) = -log p(enc(x)).

    For the Gaussian prior N(0, s^2 I) this is ||z||^2 / (2 s^2) up to a constant; the mixture's own log density
    is used for the mixture (whose low-density region is the origin). The hope: an adversarial autoencoder pushed
    the codes of its training digit to fill p(z), so codes of other digits land where p(z) is small. (In chapter 5
    most of them land inside it: this score is weak there.) A plain autoencoder has no prior of its own (its
    `code_prior()` is a stand-in), so this score means little for it.
    """
    prior = model.code_prior()
    if not prior.has_density:
        raise ValueError(f"{prior} has no closed-form density: use reconstruction_score, or train with the gaussian "
                         "or mixture prior")
    codes = metrics.encode(model, check_images(images).to(model_device(model)), batch_size=batch_size)  # n, dim
    return (-prior.log_density(codes.cpu().double())).numpy()


def typicality_score(model, images, batch_size: int = 2000, n_prior: int = 10_000) -> np.ndarray:
    """How far a code's -log p(z) is from the value typical of the prior: s(x) = |-log p(enc(x)) - H|, with
    H = E_{z ~ p}[-log p(z)] estimated from n_prior samples of the prior (a fixed generator).

    In d dimensions almost all of a Gaussian's mass lies in a thin shell of radius about sqrt(d) s, far from the
    mode at 0: a code near the origin has a high density and is still untypical. An unfamiliar input encoded near
    the mode would pass the density as normal; the typicality test of Nalisnick et al. (2019) asks instead whether
    -log p(z) is where samples of p(z) put it. For N(0, s^2 I), s(x) = | ||z||^2 - d s^2 | / (2 s^2).
    """
    return np.abs(prior_score(model, images, batch_size) - typical_value(model.code_prior(), n_prior))


def typical_value(prior, n_prior: int = 10_000) -> float:
    """H = E_{z ~ p}[-log p(z)], the mean over n_prior samples of the prior drawn from a fixed generator."""
    samples = prior.sample(n_prior, generator=torch.Generator().manual_seed(0))  # n_prior, dim
    return float((-prior.log_density(samples.double())).mean())


def standardise(scores, reference) -> np.ndarray:
    """(s - mean(r)) / std(r): scores in units of the spread of the reference scores r."""
    scores, reference = as_array(scores, np.float64), as_array(reference, np.float64)
    spread = reference.std()
    if len(reference) < 2 or not spread > 0:
        raise ValueError("standardise needs at least two reference scores that are not all equal")
    return (scores - reference.mean()) / spread


def combined_score(model, images, train_images, batch_size: int = 2000) -> np.ndarray:
    """Reconstruction error and typicality together: s(x) = (s_rec(x) - mu_rec) / sigma_rec + (s_typ(x) -
    mu_typ) / sigma_typ, each standardised by its mean mu and standard deviation sigma on `train_images`, the
    training images of the normal digit (the test images and their labels play no part), so that neither score's
    units decide the weighting."""
    return standardised_sum(
        (reconstruction_score(model, images, batch_size), typicality_score(model, images, batch_size)),
        (reconstruction_score(model, train_images, batch_size), typicality_score(model, train_images, batch_size)))


def standardised_sum(scores, references) -> np.ndarray:
    """sum_k standardise(scores[k], references[k]): scores of different units added with equal weight."""
    return sum(standardise(score, reference) for score, reference in zip(scores, references, strict=True))


def pca_reconstruction_score(train_images, images, n_components: int) -> np.ndarray:
    """The classical baseline: the squared distance to the principal subspace of the normal digit,
    s(x) = ||x - mean - W W^T (x - mean)||^2 / 784, with W the first n_components principal directions of
    train_images (scikit-learn's PCA, exact SVD: features.fitted_pca, the one place the library fits a PCA)."""
    train_images, images = as_points(train_images, "train_images"), as_points(images, "images")
    if not 1 <= n_components <= min(train_images.shape):
        raise ValueError(f"n_components must be between 1 and {min(train_images.shape)}, got {n_components}")
    pca = fitted_pca(train_images, n_components)
    restored = pca.inverse_transform(pca.transform(images))  # n, 784
    return ((images.astype(np.float64) - restored) ** 2).mean(axis=1)


def nearest_neighbour_score(train_images, images, batch_size: int | None = None) -> np.ndarray:
    """The distance to the nearest training image in pixel space, s(x) = min_i ||x - x_i||.

    Computed as ||x||^2 + ||x_i||^2 - 2 x.x_i a batch of images at a time: batch_size images (default: as many as
    keep one batch's distance matrix near 256 MB) against all training images, so 10,000 test images against the
    6,000 of one digit need well under 2 GB."""
    train = torch.as_tensor(as_points(train_images, "train_images"), dtype=torch.float32)
    queries = torch.as_tensor(as_points(images, "images"), dtype=torch.float32)
    if train.shape[1] != queries.shape[1]:
        raise ValueError(f"train images have {train.shape[1]} pixels but images {queries.shape[1]}")
    if len(train) == 0:
        raise ValueError("nearest_neighbour_score needs at least one training image")
    batch_size = batch_size or max(1, 2**26 // len(train))  # 2^26 float32 distances = 256 MB
    train_norms = train.pow(2).sum(dim=1)  # n_train
    nearest = []
    for chunk in queries.split(batch_size):
        squared = chunk.pow(2).sum(dim=1, keepdim=True) + train_norms - 2 * chunk @ train.T  # batch, n_train
        nearest.append(squared.min(dim=1).values.clamp_min(0).sqrt())  # rounding can make 0 slightly negative
    return torch.cat(nearest).double().numpy()


def auroc(scores, is_anomaly) -> float:
    """Area under the ROC curve (scikit-learn's roc_auc_score): the probability that a random anomaly scores above
    a random normal image (ties count one half). 1 is perfect, 0.5 chance, 0 perfectly reversed."""
    scores, is_anomaly = as_array(scores, np.float64), as_array(is_anomaly)
    if scores.ndim != 1 or scores.shape != is_anomaly.shape:
        raise ValueError(f"auroc needs one score per image: scores {scores.shape}, is_anomaly {is_anomaly.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("auroc got scores that are NaN or infinite: check the model and its inputs")
    is_anomaly = is_anomaly.astype(bool)
    if is_anomaly.all() or not is_anomaly.any():
        raise ValueError("auroc needs both normal images and anomalies among the scored images")
    return float(roc_auc_score(is_anomaly, scores))


def per_digit_auroc(score, data: MNIST, digits=range(N_CLASSES), on: str = "test") -> tuple[dict[int, float], float]:
    """Each digit's AUROC and their mean: for each digit d, `score(one_class_split(data, d, on))` returns the scores
    of that split's images (train or fit what it needs on split.train_images inside `score`)."""
    result = {}
    for digit in digits:
        split = one_class_split(data, digit, on)
        result[digit] = auroc(score(split), split.is_anomaly)
    if not result:
        raise ValueError("per_digit_auroc needs at least one digit")
    return result, float(np.mean(list(result.values())))


# -- the chapter's experiment: ten one-class models, their scores, the baselines ----------------------------------
# An AAE with a Gaussian prior per digit. Chosen on validation AUROC (on="validation"; the results page lists what
# was tried): an 8-D code, layers of 512 (a tenth of the data per model needs no more, and ten models fit in the
# chapter's budget), batches of 100 (a digit's ~5,500 images are 55 steps an epoch, not 11), and an adversarial
# learning rate a tenth of the book's: at the book's 2e-3 the prior's pull on ~5,500 images cost reconstruction
# (digit 2's validation AUROC fell as it trained), at 2e-4 it rose.
ONE_CLASS_OPTIONS = dict(model="aae", prior="gaussian", latent_dim=8, hidden=(512, 512), batch_size=100, epochs=25,
                         adversarial_lr=2e-4)
MODEL_SCORES = ("reconstruction", "prior", "typicality", "combined")
BASELINE_SCORES = ("pca", "nearest_neighbour")


def train_one_class(data: MNIST, digit: int, *, seed: int = 0, progress=None, **options):
    """The model of digit `digit`'s turn (ONE_CLASS_OPTIONS, overridden by `options`), trained on one_class_data
    or loaded from runs/oneclass_DIGIT[_seedK] (checkpoints.train_or_load)."""
    return train_or_load(run_name(f"oneclass_{digit}", seed), data=one_class_data(data, digit), progress=progress,
                         seed=seed, **{**ONE_CLASS_OPTIONS, **options})


def model_scores(model, split: OneClassSplit) -> dict[str, np.ndarray]:
    """The scores of a one-class model for the split's images: reconstruction, prior, typicality, combined (the same
    numbers as the functions of those names; each image encoded and reconstructed once)."""
    typical = typical_value(model.code_prior())

    def parts(images):
        density = prior_score(model, images)
        return {"reconstruction": reconstruction_score(model, images), "prior": density,
                "typicality": np.abs(density - typical)}

    scores, references = parts(split.images), parts(split.train_images)
    scores["combined"] = standardised_sum((scores["reconstruction"], scores["typicality"]),
                                          (references["reconstruction"], references["typicality"]))
    return scores


def baseline_scores(split: OneClassSplit, n_components: int) -> dict[str, np.ndarray]:
    """The classical scores on the same split: PCA with as many components as the models' code has dimensions,
    and the distance to the nearest training image of the digit."""
    return {"pca": pca_reconstruction_score(split.train_images, split.images, n_components),
            "nearest_neighbour": nearest_neighbour_score(split.train_images, split.images)}


def one_class_aurocs(models: dict, data: MNIST, on: str = "test", baselines: bool = True) -> dict[str, dict]:
    """{score: {digit: AUROC}} for every score of the models (digit -> model, as train_one_class returns their
    trainers' models) and, with `baselines`, of PCA and the nearest neighbour; AUROC in [0, 1]."""
    table = {name: {} for name in MODEL_SCORES + (BASELINE_SCORES if baselines else ())}
    for digit, model in models.items():
        split = one_class_split(data, digit, on)
        scores = model_scores(model, split)
        if baselines:
            scores |= baseline_scores(split, model.latent_dim)
        for name, values in scores.items():
            table[name][digit] = auroc(values, split.is_anomaly)
    return table
