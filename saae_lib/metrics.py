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
    labels = torch.arange(N_CLASSES).repeat_interleave(n_per_label)
    images = generate_for(model, labels, seed=seed, batch_size=batch_size)
    return int((judge.predict(images.float()).cpu() == labels).sum()) / len(labels)


# -- fidelity and variety of generated digits ------------------------------------------------------------------
def manifold_precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) of `fake` against `real` feature vectors, (N, D)
    and (M, D).

    Each set stands for its manifold: the union of balls around its points, each ball reaching out to that point's
    k-th nearest neighbour in its own set. Then

        precision = share of fake points inside the real manifold   (are the samples realistic?)
        recall    = share of real points inside the fake manifold   (do the samples cover the real variety?)

    A model that draws one perfect digit again and again has precision 1 and recall near 0; the judge's accuracy
    cannot tell it from a model that draws every style."""
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"need two sets of feature vectors of one width, got shapes {tuple(real.shape)} and "
                         f"{tuple(fake.shape)}")
    if min(len(real), len(fake)) <= k:
        raise ValueError(f"each set needs more than k={k} points, got {len(real)} and {len(fake)}")
    real, fake = real.float(), fake.float()

    def radii(points):  # each point's distance to its k-th nearest neighbour in its own set (itself at 0 excluded)
        return torch.cdist(points, points).kthvalue(k + 1, dim=1).values  # N

    def share_inside(points, centres, centre_radii):
        return float((torch.cdist(points, centres) <= centre_radii).any(dim=1).float().mean())

    return share_inside(fake, real, radii(real)), share_inside(real, fake, radii(fake))


def precision_recall(judge, images, labels, reference_images, reference_labels, k: int = 3) -> tuple[float, float]:
    """Precision and recall of `images` against `reference_images` in the judge's features (DigitClassifier.embed),
    digit by digit (each digit's images against the reference images of that digit), averaged over the digits.

    For generated digits pass the labels they were drawn for; for real ones (a baseline), their true labels."""
    features, reference = judge.embed(images).cpu(), judge.embed(reference_images).cpu()
    labels, reference_labels = labels.cpu(), reference_labels.cpu()
    digits = sorted(set(labels.tolist()) & set(reference_labels.tolist()))
    if not digits:
        raise ValueError("the two sets share no digit")
    pairs = [manifold_precision_recall(reference[reference_labels == d], features[labels == d], k) for d in digits]
    return sum(p for p, _ in pairs) / len(pairs), sum(r for _, r in pairs) / len(pairs)


@torch.no_grad()
def generate_for(model, labels: torch.Tensor, seed: int = 0, batch_size: int = 2000) -> torch.Tensor:
    """One digit decoded for each label in `labels` (N,), from a random style z of the model's prior: (N, 784).
    Pass a real split's labels to draw as many digits of each kind as it holds."""
    if getattr(model, "label_classes", 0) != N_CLASSES:
        raise ValueError("this measure needs a model whose decoder takes the digit (saae or semi)")
    generator = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    images = torch.cat([model.generate(len(chunk), labels=chunk, generator=generator)[0]
                        for chunk in labels.cpu().split(batch_size)])
    model.train(was_training)
    return images
