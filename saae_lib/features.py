"""What the codes are worth as features: a k-nearest-neighbour classifier and a linear probe trained on the codes of a
few labelled images, against PCA of the same dimension and raw pixels.

Everything here takes and returns numpy arrays (torch tensors are converted): scikit-learn does the classifying, so
the numbers are the ones anyone else would compute from the same codes.
"""

import copy
import hashlib
from collections import OrderedDict

import numpy as np
import torch
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from . import metrics
from .checkpoints import run_name, train_or_load
from .data import labeled_subset
from .training import machine_recipe

BUDGETS = (100, 1000, None)  # labelled training images per measurement; None: all of them


def as_array(x, dtype=None) -> np.ndarray:
    """x as a numpy array (a torch tensor is detached and copied to the CPU first)."""
    if torch.is_tensor(x):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=dtype)


def model_codes(model, images) -> np.ndarray:
    """z = enc(x) as a float (n, dim) numpy array (metrics.encode, in eval mode)."""
    return metrics.encode(model, images).cpu().numpy()


def as_points(x, name: str) -> np.ndarray:
    """x as a float (n, d) array: codes or flattened images, one row each."""
    x = as_array(x)
    if x.ndim > 2:  # (n, 28, 28) or (n, 1, 28, 28) images: one row of pixels each
        x = x.reshape(len(x), -1)
    if x.ndim != 2:
        raise ValueError(f"{name} must be an (n, d) array of codes or images, got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return x


def as_labels(labels, n: int, name: str) -> np.ndarray:
    """labels as an int64 (n,) array, one per row of the matching points."""
    labels = as_array(labels)
    if labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be {n} integer labels (one per row), got {labels.dtype} of shape {labels.shape}")
    return labels.astype(np.int64)


def check_classification_data(train_codes, train_labels, test_codes, test_labels):
    """The four arrays a classifier is fit and scored on, checked to agree in length and dimension."""
    train_codes, test_codes = as_points(train_codes, "train_codes"), as_points(test_codes, "test_codes")
    if train_codes.shape[1] != test_codes.shape[1]:
        raise ValueError(f"train codes are {train_codes.shape[1]}-D but test codes {test_codes.shape[1]}-D: encode "
                         "both with the same model")
    return (train_codes, as_labels(train_labels, len(train_codes), "train_labels"),
            test_codes, as_labels(test_labels, len(test_codes), "test_labels"))


def knn_accuracy(train_codes, train_labels, test_codes, test_labels, k: int = 1) -> float:
    """Share of test codes whose k nearest training codes (Euclidean) vote for their label (scikit-learn's
    KNeighborsClassifier, uniform weights). 1-NN and 5-NN on the codes are the numbers of Sainburg et al. (2021)."""
    train_codes, train_labels, test_codes, test_labels = check_classification_data(
        train_codes, train_labels, test_codes, test_labels)
    if not 1 <= k <= len(train_codes):
        raise ValueError(f"k must be between 1 and the {len(train_codes)} training codes, got {k}")
    classifier = KNeighborsClassifier(n_neighbors=k).fit(train_codes, train_labels)
    return float(classifier.score(test_codes, test_labels))


def linear_probe_accuracy(train_codes, train_labels, test_codes, test_labels, max_iter: int = 1000,
                          C: float = 1.0) -> float:
    """Test accuracy of a multinomial logistic regression fit on the training codes.

    p(y = k | z) = softmax(W s(z) + b)_k, where s standardises each dimension with the training codes' mean and
    standard deviation (so the L2 penalty 1/(2C) ||W||^2 weighs every dimension alike, whatever the code's scale);
    lbfgs with a fixed max_iter, so the number does not depend on how long one waits."""
    train_codes, train_labels, test_codes, test_labels = check_classification_data(
        train_codes, train_labels, test_codes, test_labels)
    if len(np.unique(train_labels)) < 2:
        raise ValueError("a linear probe needs training labels of at least two classes")
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=max_iter, C=C))
    probe.fit(train_codes, train_labels)
    return float(probe.score(test_codes, test_labels))


PCA_FITS = OrderedDict()  # the training data's fingerprint -> PCA with every component, the most recent last
PCA_FITS_KEPT = 4


def fitted_pca(train: np.ndarray, n_components: int) -> PCA:
    """scikit-learn's PCA(n_components, svd_solver="full") fit on the (n, d) array `train`: the exact SVD (not the
    randomised one it picks for large data: no seed, the same components every time).

    That fit computes every component and keeps the first n_components, so one fit with all of them serves every
    n_components: the last few are remembered by the data's bytes, and a smaller PCA is cut from them
    (truncated_pca, whose every attribute is its own fit's, to the last bit: a test holds them equal). Chapter 5
    asks for seven PCAs of its 55,000 x 784 training images (features in 2, 10 and 16 dimensions and PCA hashing at
    16 and 32 bits, all float32: one full fit; PCA-ITQ at 16 and 32 bits, float64: another), and a full SVD of them
    takes about ten seconds on a CPU core."""
    train = np.ascontiguousarray(train)
    key = (train.shape, train.dtype.str, hashlib.blake2b(memoryview(train).cast("B")).hexdigest())
    if key in PCA_FITS:
        PCA_FITS.move_to_end(key)
    else:
        PCA_FITS[key] = PCA(n_components=min(train.shape), svd_solver="full").fit(train)
        while len(PCA_FITS) > PCA_FITS_KEPT:
            PCA_FITS.popitem(last=False)
    return truncated_pca(PCA_FITS[key], n_components)


def truncated_pca(pca: PCA, n_components: int) -> PCA:
    """A copy of a fitted PCA that keeps its first n_components: what scikit-learn's full-SVD fit stores for that
    n_components (the leading components, variances and singular values, copied; the noise variance the mean of the
    variances left out)."""
    if not 1 <= n_components <= pca.n_components_:
        raise ValueError(f"n_components must be between 1 and the fit's {pca.n_components_}, got {n_components}")
    kept = copy.copy(pca)
    kept.n_components = kept.n_components_ = n_components
    for name in ("components_", "explained_variance_", "explained_variance_ratio_", "singular_values_"):
        setattr(kept, name, getattr(pca, name)[:n_components].copy())
    left_out = pca.explained_variance_[n_components:]
    kept.noise_variance_ = np.mean(left_out) if n_components < min(pca.n_samples_, pca.n_features_in_) else 0.0
    return kept


def pca_codes(train_images, images, dim: int) -> np.ndarray:
    """The classical baseline of the same dimension: images projected on the first `dim` principal components of
    the training images, z = W^T (x - mean), with W (784, dim) (fitted_pca)."""
    train_images, images = as_points(train_images, "train_images"), as_points(images, "images")
    if not 1 <= dim <= min(train_images.shape):
        raise ValueError(f"dim must be between 1 and {min(train_images.shape)} (images and pixels), got {dim}")
    return fitted_pca(train_images, dim).transform(images).astype(np.float32)  # n, dim


def labeled_budget(labels, n: int | None, seed: int = 0) -> np.ndarray:
    """Indices of the training images whose labels a classifier may use: n / 10 of each digit, drawn with `seed`
    (saae_lib.data.labeled_subset, the subset the semi-supervised model trains on); n=None: all of them."""
    labels = torch.as_tensor(as_array(labels))
    if n is None:
        return np.arange(len(labels))
    if not 0 < n <= len(labels):
        raise ValueError(f"n must be between 1 and the {len(labels)} labels (or None for all), got {n}")
    return labeled_subset(labels, n, seed=seed).numpy()


def accuracy_by_budget(train_codes, train_labels, test_codes, test_labels, budgets=BUDGETS, k: int = 1,
                       seed: int = 0) -> dict:
    """{budget: {"knn": k-NN accuracy, "linear": linear probe accuracy}} with each classifier fit on the
    `labeled_budget` of the training codes (budget None: all); the test codes are scored in full every time."""
    train_codes, train_labels, test_codes, test_labels = check_classification_data(
        train_codes, train_labels, test_codes, test_labels)
    result = {}
    for budget in budgets:
        pick = labeled_budget(train_labels, budget, seed)
        result[budget] = {
            "knn": knn_accuracy(train_codes[pick], train_labels[pick], test_codes, test_labels, k=k),
            "linear": linear_probe_accuracy(train_codes[pick], train_labels[pick], test_codes, test_labels),
        }
    return result


def feature_results(codes: dict, train_labels, test_labels, budgets=BUDGETS, seed: int = 0) -> dict[str, dict]:
    """{name: {budget: {"knn": 1-NN accuracy, "linear": linear probe accuracy}}} for each entry of `codes`
    ({name: (training codes, test codes)}: a model's codes, PCA's, raw pixels): accuracy_by_budget on each."""
    return {name: accuracy_by_budget(train, train_labels, test, test_labels, budgets=budgets, seed=seed)
            for name, (train, test) in codes.items()}


def baseline_codes(train_images, test_images, dims) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{"PCA D-D": (train, test)} for each dimension in `dims`, and {"pixels": (train, test)}: what a model's codes
    are compared with."""
    result = {f"PCA {dim}-D": (pca_codes(train_images, train_images, dim), pca_codes(train_images, test_images, dim))
              for dim in dims}
    return result | {"pixels": (as_points(train_images, "train_images"), as_points(test_images, "test_images"))}


# The shipped models that stand for seed 0's runs (pretrained/REGISTRY.json): loaded where the machine would not
# train the full recipe (a CPU), as chapters 1, 2 and 4 load them, so the features are those of the book's models.
SHIPPED = {"ae": "ae", "aae_gaussian": "aae-gaussian", "semi_100": "semi-100"}


def book_models(data, *, seed: int = 0, recipe: str | None = None, progress=None) -> dict:
    """The models of chapters 1, 2 and 4 whose codes chapter 5 tests as features, by their chapters' run names and
    options: for seed 0 the shipped models where the machine would not train the full recipe (a CPU; SHIPPED),
    else loaded from runs/ where those chapters trained them, else trained now. recipe: the semi-supervised model's
    where it is trained (default: machine_recipe(), as chapter 4 chooses it)."""
    recipe = recipe or machine_recipe(data.device)

    def run(stem, **options):
        shipped = SHIPPED[stem] if seed == 0 else None  # a shipped model stands only for its own seed
        return train_or_load(run_name(stem, seed), data=data, progress=progress, seed=seed, pretrained=shipped,
                             **options)

    return {
        "AE 2-D (ch. 1)": run("ae", model="ae"),
        "AAE 2-D (ch. 2)": run("aae_gaussian", model="aae", prior="gaussian"),
        "semi 100 (ch. 4)": run("semi_100", model="semi", n_labels=100, recipe=recipe),
    }


def feature_codes(book: dict, data) -> dict:
    """{name: (training codes, test codes)} of the book's models: z of the 2-D models, and the semi-supervised
    model's style z and label probabilities q(y | x)."""
    def pair(encode):
        return encode(data.train_images), encode(data.test_images)

    semi = book["semi 100 (ch. 4)"].model
    return {
        "AE 2-D (ch. 1)": pair(lambda x: model_codes(book["AE 2-D (ch. 1)"].model, x)),
        "AAE 2-D (ch. 2)": pair(lambda x: model_codes(book["AAE 2-D (ch. 2)"].model, x)),
        "semi style z (10-D)": pair(lambda x: model_codes(semi, x)),
        "semi label q(y|x) (10-D)": pair(lambda x: metrics.label_probabilities(semi, x).cpu().numpy()),
    }
