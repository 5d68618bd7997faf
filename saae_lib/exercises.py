"""Checkers for the chapters' "implement it" exercises.

The reader writes a function in the notebook and passes it to a checker, which calls it on random inputs, compares
it with the library's own implementation and says plainly what is wrong, naming the typical mistake when the
answer matches one. A checker prints one verdict and returns True or False; it never raises, so a notebook runs on.

    from saae_lib import exercises
    def reconstruction_loss(logits, x): ...
    exercises.check_reconstruction_loss(reconstruction_loss)
"""

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import metrics, models
from .data import N_CLASSES


@dataclass
class Exercise:
    name: str
    reference: Callable
    inputs: Callable[[torch.Generator], tuple]  # one random case, as the arguments of the function
    mistakes: dict[str, Callable] = field(default_factory=dict)  # what the mistake is -> a wrong implementation
    atol: float = 1e-5

    def same(self, answer, expected) -> bool:
        if not torch.is_tensor(answer):
            answer = torch.as_tensor(answer, dtype=expected.dtype)
        if answer.shape != expected.shape:
            return False
        if not expected.is_floating_point():
            return torch.equal(answer.long(), expected.long())
        return torch.allclose(answer.double(), expected.double(), atol=self.atol, rtol=1e-4)


def describe(value) -> str:
    if torch.is_tensor(value):
        return f"{value.item():.4f}" if value.numel() == 1 else f"a tensor of shape {tuple(value.shape)}"
    return repr(value)


def check(exercise: Exercise, function: Callable, trials: int = 5, seed: int = 0) -> bool:
    """Run `function` against the reference on `trials` random cases; print one verdict."""
    generator = torch.Generator().manual_seed(seed)
    for _ in range(trials):
        args = exercise.inputs(generator)
        expected = exercise.reference(*args)
        try:
            answer = function(*(a.clone() if torch.is_tensor(a) else a for a in args))
        except NotImplementedError:
            print(f"{exercise.name}: not implemented yet (replace the `raise NotImplementedError` with your code)")
            return False
        except Exception as error:  # the reader's code: any error is part of the answer
            print(f"{exercise.name}: your function raised {type(error).__name__}: {error}")
            return False
        try:
            correct = exercise.same(answer, expected)
        except (TypeError, ValueError, RuntimeError):
            correct = False
        if correct:
            continue
        for mistake, wrong in exercise.mistakes.items():
            try:
                if exercise.same(answer, wrong(*args)):
                    print(f"{exercise.name}: not yet: {mistake}")
                    return False
            except (TypeError, ValueError, RuntimeError):
                pass
        shapes = ", ".join(describe(a) for a in args if torch.is_tensor(a))
        print(f"{exercise.name}: not yet: for inputs ({shapes}) it returned {describe(answer)}, the reference "
              f"{describe(expected)}")
        return False
    print(f"{exercise.name}: correct (matches the library on {trials} random cases)")
    return True


# -- chapter 1: the reconstruction loss --------------------------------------------------------------------------------
def _logits_and_images(generator):
    n = int(torch.randint(2, 9, (1,), generator=generator))
    return torch.randn(n, 784, generator=generator) * 3, torch.rand(n, 784, generator=generator)


RECONSTRUCTION_LOSS = Exercise(
    "reconstruction_loss", models.reconstruction_loss, _logits_and_images,
    mistakes={
        "the loss is summed over the pixels; average it (the mean over pixels and images)":
            lambda logits, x: F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / len(x),
        "the sigmoid is applied twice: binary_cross_entropy_with_logits takes the logits themselves":
            lambda logits, x: F.binary_cross_entropy_with_logits(torch.sigmoid(logits), x),
        "that is the squared error; the chapter's loss is the binary cross-entropy":
            lambda logits, x: (torch.sigmoid(logits) - x).pow(2).mean(),
        "the arguments are swapped: the prediction (logits) comes first, the target (the images) second":
            lambda logits, x: F.binary_cross_entropy_with_logits(x, torch.sigmoid(logits)),
    })


def check_reconstruction_loss(function) -> bool:
    """Chapter 1: reconstruction_loss(logits, x), binary cross-entropy per pixel from the decoder's logits."""
    return check(RECONSTRUCTION_LOSS, function)


# -- chapter 2: the discriminator's loss ------------------------------------------------------------------------------
def _discriminator_logits(generator):
    n = int(torch.randint(2, 9, (1,), generator=generator))
    return torch.randn(n, 1, generator=generator) * 2, torch.randn(n, 1, generator=generator) * 2


DISCRIMINATOR_LOSS = Exercise(
    "discriminator_loss", lambda real, fake: models.bce(real, 1.0) + models.bce(fake, 0.0), _discriminator_logits,
    mistakes={
        "the targets are swapped: prior samples are the real ones (target 1), codes the fake ones (target 0)":
            lambda real, fake: models.bce(real, 0.0) + models.bce(fake, 1.0),
        "only the prior samples' term is there; add the codes' term, with target 0":
            lambda real, fake: models.bce(real, 1.0),
        "only the codes' term is there; add the prior samples' term, with target 1":
            lambda real, fake: models.bce(fake, 0.0),
        "the two terms are averaged; the chapter's L_D is their sum":
            lambda real, fake: (models.bce(real, 1.0) + models.bce(fake, 0.0)) / 2,
        "that is the generator's loss (codes called real); the discriminator calls them fake":
            lambda real, fake: models.bce(fake, 1.0),
    })


def check_discriminator_loss(function) -> bool:
    """Chapter 2: discriminator_loss(real_logits, fake_logits), from D's logits on prior samples and on codes."""
    return check(DISCRIMINATOR_LOSS, function)


# -- chapter 3: what the supervised AAE's decoder sees --------------------------------------------------------------
def _codes_and_labels(generator):
    n = int(torch.randint(2, 9, (1,), generator=generator))
    return torch.randn(n, 2, generator=generator), torch.randint(N_CLASSES, (n,), generator=generator)


DECODER_INPUT = Exercise(
    "decoder_input", lambda z, labels: torch.cat([F.one_hot(labels, N_CLASSES).float(), z], dim=1),
    _codes_and_labels,
    mistakes={
        "the order is swapped: the one-hot label comes first, then z (as in the library's decoder)":
            lambda z, labels: torch.cat([z, F.one_hot(labels, N_CLASSES).float()], dim=1),
        "the label is a single number; the decoder gets it as a one-hot vector of 10":
            lambda z, labels: torch.cat([labels[:, None].float(), z], dim=1),
    })


def check_decoder_input(function) -> bool:
    """Chapter 3: decoder_input(z, labels), the (n, 12) input of the supervised AAE's decoder."""
    return check(DECODER_INPUT, function)


# -- chapter 4: the balance term and the naming of clusters ---------------------------------------------------------
def _category_probabilities(generator):
    n, k = int(torch.randint(3, 12, (1,), generator=generator)), int(torch.randint(2, 17, (1,), generator=generator))
    return (torch.randn(n, k, generator=generator) * 2).softmax(dim=1),


def _entropy(p):
    return -(p * p.clamp_min(1e-12).log()).sum(dim=-1)


BALANCE_PENALTY = Exercise(
    "balance_penalty", models.balance_penalty, _category_probabilities,
    mistakes={
        "that averages the entropy of each code; the term needs the entropy of the batch's mean probabilities":
            lambda p: math.log(p.shape[1]) - _entropy(p).mean(),
        "that is the entropy of the mean itself; the penalty is log K minus it (0 when all K are used equally)":
            lambda p: _entropy(p.mean(dim=0)),
        "the logarithm has base 2; the library uses natural logarithms":
            lambda p: math.log2(p.shape[1]) - _entropy(p.mean(dim=0)) / math.log(2),
        "the sign is flipped: the penalty is log K - H(mean), never negative":
            lambda p: _entropy(p.mean(dim=0)) - math.log(p.shape[1]),
    })


def check_balance_penalty(function) -> bool:
    """Chapter 4: balance_penalty(probabilities), log K - H(mean over the batch of q(y | x))."""
    return check(BALANCE_PENALTY, function)


def _clusters_and_labels(generator):
    """Clusters 0..k-2 each get five images of one digit and three of others (a clear majority, so that no tie
    decides the answer); cluster k-1 stays empty."""
    k = int(torch.randint(3, 9, (1,), generator=generator))
    clusters, labels = [], []
    for cluster in range(k - 1):
        majority = int(torch.randint(N_CLASSES, (1,), generator=generator))
        others = (majority + 1 + torch.randint(N_CLASSES - 1, (3,), generator=generator)) % N_CLASSES
        clusters += [cluster] * 8
        labels += [majority] * 5 + others.tolist()
    order = torch.randperm(len(labels), generator=generator)
    return torch.tensor(clusters)[order], torch.tensor(labels)[order], k


CLUSTER_LABELS = Exercise(
    "cluster_labels", metrics.cluster_labels, _clusters_and_labels,
    mistakes={
        "an empty cluster gets label -1 (no image names it)":
            lambda c, y, k: torch.stack([torch.bincount(y[c == i], minlength=N_CLASSES).argmax() for i in range(k)]),
        "each cluster is named by its least common digit; it is the most common one":
            lambda c, y, k: _named(c, y, k, lambda counts: counts.masked_fill(counts == 0, 10**9).argmin()),
    })


def _named(clusters, labels, k, pick):
    names = []
    for i in range(k):
        counts = torch.bincount(labels[clusters == i], minlength=N_CLASSES)
        names.append(pick(counts) if counts.sum() else torch.tensor(-1))
    return torch.stack(names)


def check_cluster_labels(function) -> bool:
    """Chapter 4: cluster_labels(clusters, labels, n_clusters), each cluster's majority digit (-1 if empty)."""
    return check(CLUSTER_LABELS, function)
