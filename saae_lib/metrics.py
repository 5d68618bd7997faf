"""Numbers that compare models: reconstruction error, prior match, what the codes know about the digit,
classification and clustering error, and the label accuracy of generated digits as judged by an independent
classifier."""

import torch

from .data import N_CLASSES, check_images, check_labels


@torch.no_grad()
def in_batches(model, function, images, labels=None, batch_size=2000) -> torch.Tensor:
    """function(images[, labels]) over all images, a batch at a time, with the model in eval mode (its mode is
    restored afterwards); the results concatenated."""
    was_training = model.training
    model.eval()
    try:
        images = check_images(images)
        if labels is None:
            return torch.cat([function(chunk) for chunk in images.split(batch_size)])
        return torch.cat([function(x, y) for x, y in zip(images.split(batch_size), labels.split(batch_size),
                                                          strict=True)])
    finally:
        model.train(was_training)


def encode(model, images, batch_size=2000):
    """Codes of all images (for the semi-supervised and clustering models: the style codes z)."""
    return in_batches(model, model.encode, images, batch_size=batch_size).float()


def reconstruct(model, images, labels=None, batch_size=2000):
    """Reconstructions in [0, 1]; models whose decoder takes the label (the supervised AAE) use `labels`."""
    return in_batches(model, model.reconstruct, images, labels, batch_size).float()


def label_probabilities(model, images, batch_size=2000):
    """q(y | x) of all images (semi-supervised and clustering models)."""
    return in_batches(model, model.label_probabilities, images, batch_size=batch_size).float()


def predict(model, images, batch_size=2000):
    """model.classify of all images: a digit (semi, supervised) or a cluster (cluster) per image."""
    return in_batches(model, model.classify, images, batch_size=batch_size)


def reconstruction_error(model, images, labels=None) -> float:
    """Mean squared error per pixel between images and their reconstructions."""
    images = check_images(images)
    return float((reconstruct(model, images, labels) - images).pow(2).mean())


def mmd(x: torch.Tensor, y: torch.Tensor, bandwidths=(0.2, 0.5, 1.0, 2.0, 5.0)) -> float:
    """Unbiased squared maximum mean discrepancy with a sum of Gaussian kernels (Gretton et al., 2012).

    Zero in expectation when x and y come from the same distribution; larger the more they differ.
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(f"mmd needs two (n, d) sample sets of equal d, got {tuple(x.shape)} and {tuple(y.shape)}")
    if len(x) < 2 or len(y) < 2:
        raise ValueError("mmd needs at least two samples in each set")
    x, y = x.double(), y.double()

    def kernel(a, b):
        distances = torch.cdist(a, b).pow(2)
        return sum(torch.exp(-distances / (2 * h**2)) for h in bandwidths)

    kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    n, m = len(x), len(y)
    within_x = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
    within_y = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    return float(within_x + within_y - 2 * kxy.mean())


def prior_match(model, images, n=2000, seed=0, prior=None) -> float:
    """MMD between the codes of `n` images drawn at random (seeded) from `images` and `n` samples of a prior (lower
    is a better match).

    A random sample, never the first n: MNIST's test set is ordered (its first 5000 images come from NIST's training
    writers, the cleaner half), so its first 2000 codes matched the prior 10 times worse than a random 2000
    (../shared/evidence/prior-match-first-n.md). The prior defaults to the model's `code_prior()`: its own, or for
    an autoencoder (which has none) the standard Gaussian, the AAE's default prior.
    """
    generator = torch.Generator().manual_seed(seed)
    pick = torch.randperm(len(images), generator=generator)[:n]
    codes = encode(model, images[pick.to(images.device)])
    prior = prior or model.code_prior()
    samples = prior.sample(len(codes), generator=generator)
    return mmd(codes.cpu(), samples)


def component_accuracy(model, images, labels) -> float:
    """Share of images whose code is most likely under their own digit's component of the model's prior (a
    label-aware mixture: each digit owns one component)."""
    prior = model.code_prior()
    if not hasattr(prior, "component_log_density"):
        raise ValueError(f"component_accuracy needs a prior made of one component per digit, not {prior}")
    nearest = prior.component_log_density(encode(model, images).cpu()).argmax(dim=1)
    return float((nearest == check_labels(labels).cpu()).float().mean())


def nearest_code_accuracy(model, images, labels, reference_images, reference_labels) -> float:
    """How much the codes know about the digit: each image takes the label of the reference image whose code is
    nearest (a 1-nearest-neighbour classifier on the codes); chance is 1 / 10."""
    if len(labels) != len(images) or len(reference_labels) != len(reference_images):
        raise ValueError("nearest_code_accuracy needs one label per image and one per reference image")
    distances = torch.cdist(encode(model, images), encode(model, reference_images))
    guess = check_labels(reference_labels)[distances.argmin(dim=1)]
    return float((guess == check_labels(labels)).float().mean())


def classification_error(predicted: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of wrong predictions."""
    if predicted.shape != labels.shape:
        raise ValueError(f"predictions {tuple(predicted.shape)} and labels {tuple(labels.shape)} differ in shape")
    if len(labels) == 0:
        raise ValueError("classification_error of an empty set is undefined")
    return float((predicted.cpu() != labels.cpu()).float().mean())


def cluster_labels(clusters: torch.Tensor, labels: torch.Tensor, n_clusters: int) -> torch.Tensor:
    """The majority label of each cluster (clusters nobody falls into get label -1)."""
    clusters, labels = clusters.cpu().long(), check_labels(labels.cpu())
    counts = torch.zeros(n_clusters, N_CLASSES, dtype=torch.long)
    counts.index_put_((clusters, labels), torch.ones_like(labels), accumulate=True)
    mapping = counts.argmax(dim=1)
    mapping[counts.sum(dim=1) == 0] = -1
    return mapping


def cluster_labels_by_top_image(probabilities: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Each cluster named by the label of the one image with the highest probability of it, q(y = c | x): the rule
    of Makhzani et al. (2015), who apply it to validation images."""
    return check_labels(labels.cpu())[probabilities.cpu().argmax(dim=0)]


def clustering_error(clusters, labels, mapping: torch.Tensor) -> float:
    """Error after labelling each cluster with its majority label (the mapping comes from training data)."""
    return classification_error(mapping[clusters.cpu().long()], labels)


@torch.no_grad()
def generated_label_accuracy(model, judge, n_per_label=1000, seed=0, batch_size=2000) -> float:
    """Share of digits generated for label k (random z from the prior) that the judge reads as k.

    For any model whose decoder takes the digit as well as z (the supervised AAE, the semi-supervised AAE)."""
    if getattr(model, "label_classes", 0) != N_CLASSES:
        raise ValueError("generated_label_accuracy needs a model whose decoder takes the digit (saae or semi)")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(N_CLASSES).repeat_interleave(n_per_label)
    was_training = model.training
    model.eval()
    correct = 0
    for label_chunk in labels.split(batch_size):
        images, _ = model.generate(len(label_chunk), labels=label_chunk, generator=generator)
        correct += int((judge.predict(images.float()).cpu() == label_chunk).sum())
    model.train(was_training)
    return correct / len(labels)
