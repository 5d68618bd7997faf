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
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from . import metrics
from .data import MNIST, N_CLASSES, check_images
from .features import as_array, as_points


@dataclass
class OneClassSplit:
    """One digit's turn: it alone to train on (and to tune on: val_images), every test image to score."""

    digit: int
    train_images: torch.Tensor  # the normal digit's training images
    val_images: torch.Tensor  # the normal digit's validation images
    test_images: torch.Tensor  # all test images
    test_labels: torch.Tensor
    is_anomaly: torch.Tensor  # (n_test,) bool: test label != digit

    def __repr__(self) -> str:
        return (f"OneClassSplit(digit={self.digit}, train={len(self.train_images)}, "
                f"test={len(self.test_images)} of which {int(self.is_anomaly.sum())} anomalies)")


def one_class_split(data: MNIST, digit: int) -> OneClassSplit:
    """Digit `digit` as the normal class: its training (and validation) images only, and all test images with
    is_anomaly = (label != digit)."""
    if not 0 <= digit < N_CLASSES:
        raise ValueError(f"digit must be in 0..{N_CLASSES - 1}, got {digit}")
    normal = data.train_labels == digit
    if not normal.any():
        raise ValueError(f"the data hold no training images of digit {digit}: nothing to learn the normal class from")
    return OneClassSplit(
        digit=digit,
        train_images=data.train_images[normal],
        val_images=data.val_images[data.val_labels == digit],
        test_images=data.test_images,
        test_labels=data.test_labels,
        is_anomaly=data.test_labels != digit,
    )


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
    is used for the mixture (whose low-density region is the origin). An adversarial autoencoder pushed the codes of
    its training digit to fill p(z), so codes of other digits that land where p(z) is small stand out. A plain
    autoencoder has no prior of its own (its `code_prior()` is a stand-in), so this score means little for it.
    """
    prior = model.code_prior()
    if not prior.has_density:
        raise ValueError(f"{prior} has no closed-form density: use reconstruction_score, or train with the gaussian "
                         "or mixture prior")
    codes = metrics.encode(model, check_images(images).to(model_device(model)), batch_size=batch_size)  # n, dim
    return (-prior.log_density(codes.cpu().double())).numpy()


def standardise(scores, reference) -> np.ndarray:
    """(s - mean(r)) / std(r): scores in units of the spread of the reference scores r."""
    scores, reference = as_array(scores, np.float64), as_array(reference, np.float64)
    spread = reference.std()
    if len(reference) < 2 or not spread > 0:
        raise ValueError("standardise needs at least two reference scores that are not all equal")
    return (scores - reference.mean()) / spread


def combined_score(model, images, train_images, batch_size: int = 2000) -> np.ndarray:
    """Reconstruction error and prior score together: s(x) = (s_rec(x) - mu_rec) / sigma_rec + (s_prior(x) -
    mu_prior) / sigma_prior, each standardised by its mean mu and standard deviation sigma on `train_images`, the
    training images of the normal digit (the test images and their labels play no part), so that neither score's
    units decide the weighting."""
    reference_rec = reconstruction_score(model, train_images, batch_size)
    reference_prior = prior_score(model, train_images, batch_size)
    return (standardise(reconstruction_score(model, images, batch_size), reference_rec)
            + standardise(prior_score(model, images, batch_size), reference_prior))


def pca_reconstruction_score(train_images, images, n_components: int) -> np.ndarray:
    """The classical baseline: the squared distance to the principal subspace of the normal digit,
    s(x) = ||x - mean - W W^T (x - mean)||^2 / 784, with W the first n_components principal directions of
    train_images (scikit-learn's PCA, exact SVD)."""
    train_images, images = as_points(train_images, "train_images"), as_points(images, "images")
    if not 1 <= n_components <= min(train_images.shape):
        raise ValueError(f"n_components must be between 1 and {min(train_images.shape)}, got {n_components}")
    pca = PCA(n_components=n_components, svd_solver="full").fit(train_images)
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


def per_digit_auroc(score, data: MNIST, digits=range(N_CLASSES)) -> tuple[dict[int, float], float]:
    """Each digit's AUROC and their mean: for each digit d, `score(one_class_split(data, d))` returns the scores of
    that split's test images (train or fit what it needs on split.train_images inside `score`)."""
    result = {}
    for digit in digits:
        split = one_class_split(data, digit)
        result[digit] = auroc(score(split), split.is_anomaly)
    if not result:
        raise ValueError("per_digit_auroc needs at least one digit")
    return result, float(np.mean(list(result.values())))
