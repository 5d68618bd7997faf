"""Checkers for the chapters' "implement it" exercises.

The reader writes a function in the notebook and passes it to a checker, which calls it on random inputs and on
edge cases chosen so that the usual wrong answers fail (extreme logits, unused categories, empty clusters anywhere),
compares it with the library's own implementation and says plainly what is wrong: the first value that differs
(index, yours, the reference), a shape or dtype that does not fit, and the typical mistake when the answer matches
one. A checker prints one verdict and returns True or False; it never raises, so a notebook runs on.

    from saae_lib import exercises
    def reconstruction_loss(logits, x): ...
    exercises.check_reconstruction_loss(reconstruction_loss)

`check_phases` checks a whole AAE training step the same way, phase by phase: which parameters get gradients and
which change in each (`reference_training_step` is its solution).
"""

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from . import metrics, models
from .data import N_CLASSES


@dataclass
class Case:
    """One input of an exercise: the arguments, what they are (named in the verdict) and, for a case that targets a
    known mistake, `hint(answer, args)`: what an answer that is wrong here most likely got wrong (None: no guess)."""

    args: tuple
    what: str
    hint: Callable | None = None


@dataclass
class Exercise:
    name: str
    reference: Callable
    inputs: Callable[[torch.Generator], Case]  # one random case
    edge_cases: Callable[[], list[Case]] = list  # fixed cases, tried after the random ones
    edge_summary: str = ""  # what the edge cases are, for the verdict of a correct answer
    mistakes: dict[str, Callable] = field(default_factory=dict)  # what the mistake is -> a wrong implementation
    hint: Callable | None = None  # (answer, args) -> the likely mistake on any case, or None
    compare: Callable | None = None  # (exercise, answer, expected, args) -> how it differs, or None; default: values
    atol: float = 1e-5
    rtol: float = 1e-4

    def cases(self, trials: int, seed: int) -> list[Case]:
        generator = torch.Generator().manual_seed(seed)
        return [self.inputs(generator) for _ in range(trials)] + self.edge_cases()

    def difference(self, answer, expected, args=()) -> str | None:
        """How `answer` differs from the reference's `expected` (None: it does not)."""
        if self.compare is not None:
            return self.compare(self, answer, expected, args)
        return difference(answer, expected, self.atol, self.rtol)

    def same(self, answer, expected) -> bool:
        """Strict equality up to the tolerance (how an answer is matched with a typical mistake)."""
        return difference(answer, expected, self.atol, self.rtol) is None


# -- comparing an answer with the reference ---------------------------------------------------------------------------
def _pair(a: float, b: float) -> tuple[str, str]:
    """Two numbers written with as many digits as it takes to tell them apart."""
    for digits in range(5, 18):
        first, second = f"{a:.{digits}g}", f"{b:.{digits}g}"
        if first != second:
            return first, second
    return repr(a), repr(b)


def _index(index: tuple[int, ...]) -> str:
    return str(index[0]) if len(index) == 1 else str(index)


def _shape(tensor) -> str:
    return "a scalar (shape ())" if tensor.dim() == 0 else f"a tensor of shape {tuple(tensor.shape)}"


def as_answer(answer, expected) -> tuple[torch.Tensor | None, str | None]:
    """The answer as a tensor comparable with `expected`, or None and what is wrong with its type, shape or dtype."""
    if answer is None:
        return None, "it returned None (is the `return` missing?)"
    if isinstance(answer, (int, float)) or (not torch.is_tensor(answer) and getattr(answer, "ndim", None) == 0):
        answer = torch.as_tensor(answer, dtype=expected.dtype)  # a Python (or NumPy) number
    elif not torch.is_tensor(answer):
        try:
            answer = torch.as_tensor(answer)
        except (TypeError, ValueError, RuntimeError):
            return None, f"it returned a {type(answer).__name__}, the reference {_shape(expected)}"
    answer = answer.detach().cpu()
    if answer.shape != expected.shape:
        if expected.dim() == 0 and answer.numel() == 1:
            return None, (f"it returned a tensor of shape {tuple(answer.shape)} ({float(answer.reshape(())):.5g}) "
                          f"where a scalar (a 0-dim tensor, shape ()) is expected (the reference "
                          f"{float(expected):.5g}): drop the extra dimension (reduce without keepdim=True, or take "
                          f"[0])")
        if expected.dim() == 0:
            return None, (f"it returned a tensor of shape {tuple(answer.shape)} where one number (a 0-dim tensor) is "
                          f"expected: reduce it to one number")
        return None, f"it returned {_shape(answer)}, the reference {_shape(expected)}"
    if expected.is_floating_point() and not answer.is_floating_point():
        return None, f"it returned a tensor of dtype {answer.dtype} where floats are expected ({expected.dtype})"
    integers = not (expected.is_floating_point() or expected.is_complex() or expected.dtype == torch.bool)
    if integers and (answer.is_floating_point() or answer.is_complex() or answer.dtype == torch.bool):
        return None, (f"it returned a tensor of dtype {answer.dtype} where integers are expected ({expected.dtype}): "
                      f"build the result with an integer dtype")
    return answer, None


def difference(answer, expected, atol=1e-5, rtol=1e-4) -> str | None:
    """How `answer` differs from `expected`: its type, shape or dtype, or its first differing value (index, yours, the
    reference); None when they agree within the tolerance (nan only matches nan, inf only inf of the same sign)."""
    answer, problem = as_answer(answer, expected)
    if problem:
        return problem
    expected = expected.detach().cpu()
    if expected.is_floating_point():
        close = torch.isclose(answer.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=True)
    else:
        close = answer.long() == expected.long()
    if bool(close.all()):
        return None
    if expected.dim() == 0:
        yours, reference = _pair(float(answer), float(expected))
        return f"it returned {yours}, the reference {reference}"
    wrong = (~close).nonzero()
    index = tuple(int(i) for i in wrong[0])
    if expected.is_floating_point():
        yours, reference = _pair(float(answer[index]), float(expected[index]))
    else:
        yours, reference = str(int(answer[index])), str(int(expected[index]))
    return (f"it returned a tensor of shape {tuple(expected.shape)} that differs from the reference in {len(wrong)} of "
            f"{expected.numel()} values; the first at index {_index(index)}: yours {yours}, the reference {reference}")


def check(exercise: Exercise, function: Callable, trials: int = 5, seed: int = 0) -> bool:
    """Run `function` against the reference on `trials` random cases and the edge cases; print one verdict."""
    cases = exercise.cases(trials, seed)
    for case in cases:
        expected = exercise.reference(*case.args)
        try:
            answer = function(*(a.clone() if torch.is_tensor(a) else a for a in case.args))
        except NotImplementedError:
            print(f"{exercise.name}: not implemented yet (replace the `raise NotImplementedError` with your code)")
            return False
        except Exception as error:  # the reader's code: any error is part of the answer
            print(f"{exercise.name}: your function raised {type(error).__name__}: {error} (for {case.what})")
            return False
        try:
            problem = exercise.difference(answer, expected, case.args)
        except (TypeError, ValueError, RuntimeError, IndexError) as error:
            problem = f"its result could not be compared with the reference ({type(error).__name__}: {error})"
        if problem is None:
            continue
        verdict = f"{exercise.name}: not yet: for {case.what}, {problem}"
        explanation = _named_mistake(exercise, answer, case.args)
        for hint in (case.hint, exercise.hint):
            if explanation is None and hint is not None:
                try:
                    explanation = hint(_tensor(answer), case.args)
                except (TypeError, ValueError, RuntimeError, IndexError):  # an answer too odd to guess at
                    pass
        print(f"{verdict}. {_sentence(explanation)}" if explanation else verdict)
        return False
    edges = len(cases) - trials
    tried = f"{trials} random cases" + (f" and {edges} edge cases: {exercise.edge_summary}" if edges else "")
    print(f"{exercise.name}: correct (matches the library on {tried})")
    return True


def _tensor(answer) -> torch.Tensor | None:
    """The answer as a tensor whatever its shape (for the hints), or None."""
    try:
        return torch.as_tensor(answer).detach().cpu() if answer is not None else None
    except (TypeError, ValueError, RuntimeError):
        return None


def _named_mistake(exercise, answer, args) -> str | None:
    for mistake, wrong in exercise.mistakes.items():
        try:
            if exercise.same(answer, wrong(*args)):
                return mistake
        except (TypeError, ValueError, RuntimeError, IndexError):
            pass
    return None


def _sentence(text: str) -> str:
    return text[0].upper() + text[1:]


# -- chapter 1: the reconstruction loss --------------------------------------------------------------------------------
def _logits_and_images(generator):
    n = int(torch.randint(2, 9, (1,), generator=generator))
    return Case((torch.randn(n, 784, generator=generator) * 3, torch.rand(n, 784, generator=generator)),
                f"random logits and images of shape ({n}, 784)")


def _signs(n, generator):
    return torch.randint(2, n, generator=generator) * 2.0 - 1


LOG_SIGMOID = ("compute it from the logits: the log-sigmoid form (log sigmoid(l) = F.logsigmoid(l), "
               "log(1 - sigmoid(l)) = F.logsigmoid(-l)) or F.binary_cross_entropy_with_logits")


def _large_logits_hint(answer, args):
    """For the extreme-logit cases: the formula through sigmoid(l) either overflows or loses its digits."""
    if answer is not None and not bool(torch.isfinite(answer).all()):
        return (f"the inf (or nan) comes from logits of ±17 and beyond: in float32 sigmoid(l) rounds to exactly 1 "
                f"there, so log(1 - sigmoid(l)) = log 0 = -inf (and 0 * log 0 = nan where x = 1); {LOG_SIGMOID}")
    return (f"large logits lose their digits on the way through sigmoid(l): in float32 1 - sigmoid(15) keeps about "
            f"one digit and sigmoid(l) is exactly 1 from l ≈ 17 on, so a clamp or epsilon that keeps the log finite "
            f"(F.binary_cross_entropy on sigmoid(l) clamps it at -100) gives a wrong value; {LOG_SIGMOID}")


def _extreme_logit_cases():
    """Logits far beyond the random cases' ±13: ±40 and ±100 (where sigmoid(l) is exactly 1 in float32, so the formula
    through sigmoid overflows) and ±15 (where it keeps about one digit of 1 - sigmoid(l))."""
    generator = torch.Generator().manual_seed(1)
    large = _signs((3, 784), generator) * (40 + torch.rand(3, 784, generator=generator))
    huge = _signs((3, 784), generator) * 100
    binary = torch.randint(2, (3, 784), generator=generator).float()
    moderate = _signs((4, 784), generator) * (15 + torch.rand(4, 784, generator=generator))
    return [Case((large, torch.rand(3, 784, generator=generator)), "logits of ±40 and beyond (3 images)",
                 _large_logits_hint),
            Case((huge, binary), "logits of ±100 and images of exactly 0 and 1 (3 images)", _large_logits_hint),
            Case((moderate, torch.rand(4, 784, generator=generator)), "logits of ±15 and beyond (4 images)",
                 _large_logits_hint)]


RECONSTRUCTION_LOSS = Exercise(
    "reconstruction_loss", models.reconstruction_loss, _logits_and_images, _extreme_logit_cases,
    "logits of ±40, ±100 and ±15",
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
    return Case((torch.randn(n, 1, generator=generator) * 2, torch.randn(n, 1, generator=generator) * 2),
                f"random logits of shape ({n}, 1)")


def _discriminator_logit_hint(answer, args):
    if answer is not None and not bool(torch.isfinite(answer).all()):
        return ("the inf comes from large logits: in float32 sigmoid(l) rounds to exactly 1 from l ≈ 17 on, so "
                "-log(1 - sigmoid(l)) is -log 0 = inf; compute it from the logits, with models.bce or "
                "F.binary_cross_entropy_with_logits")
    return ("large logits lose their digits on the way through sigmoid(l): in float32 1 - sigmoid(15) keeps about one "
            "digit and sigmoid(l) is exactly 1 from l ≈ 17 on, so a clamp or epsilon that keeps the log finite "
            "(F.binary_cross_entropy clamps it at -100) gives a wrong value; compute it from the logits, with "
            "models.bce or F.binary_cross_entropy_with_logits")


def _extreme_discriminator_logits():
    alternating = torch.tensor([[1.0], [-1.0], [1.0], [-1.0]])
    return [Case((-scale * alternating, scale * alternating), f"logits of ±{scale:g} (4 of each)",
                 _discriminator_logit_hint) for scale in (40.0, 15.0)]


DISCRIMINATOR_LOSS = Exercise(
    "discriminator_loss", lambda real, fake: models.bce(real, 1.0) + models.bce(fake, 0.0), _discriminator_logits,
    _extreme_discriminator_logits, "logits of ±40 and ±15",
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
    return Case((torch.randn(n, 2, generator=generator), torch.randint(N_CLASSES, (n,), generator=generator)),
                f"random codes of shape ({n}, 2) and their labels")


def _decoder_input_cases():
    generator = torch.Generator().manual_seed(3)
    return [Case((torch.randn(5, 2, generator=generator), torch.tensor([0, 3, 1, 3, 2])), "labels 0 to 3 only"),
            Case((torch.randn(10, 2, generator=generator), torch.randperm(N_CLASSES, generator=generator)),
                 "each digit 0 to 9 once")]


def _decoder_input_hint(answer, args):
    z, labels = args
    if answer is not None and answer.dim() == 2 and 2 < answer.shape[1] < N_CLASSES + 2:
        return (f"F.one_hot(labels) takes the number of classes from the largest label in the batch "
                f"({int(labels.max())} here): pass num_classes=10")
    return None


DECODER_INPUT = Exercise(
    "decoder_input", lambda z, labels: torch.cat([F.one_hot(labels, N_CLASSES).float(), z], dim=1),
    _codes_and_labels, _decoder_input_cases, "labels 0 to 3 only, each digit once",
    mistakes={
        "the order is swapped: the one-hot label comes first, then z (as in the library's decoder)":
            lambda z, labels: torch.cat([z, F.one_hot(labels, N_CLASSES).float()], dim=1),
        "the label is a single number; the decoder gets it as a one-hot vector of 10":
            lambda z, labels: torch.cat([labels[:, None].float(), z], dim=1),
    },
    hint=_decoder_input_hint)


def check_decoder_input(function) -> bool:
    """Chapter 3: decoder_input(z, labels), the (n, 12) input of the supervised AAE's decoder."""
    return check(DECODER_INPUT, function)


# -- chapter 4: the balance term and the naming of clusters ---------------------------------------------------------
def _category_probabilities(generator):
    n, k = int(torch.randint(3, 12, (1,), generator=generator)), int(torch.randint(2, 17, (1,), generator=generator))
    return Case(((torch.randn(n, k, generator=generator) * 2).softmax(dim=1),),
                f"random probabilities of shape ({n}, {k})")


def _entropy(p):
    return -(p * p.clamp_min(1e-12).log()).sum(dim=-1)


def _unused_category_hint(answer, args):
    if answer is not None and not bool(torch.isfinite(answer).all()):
        return ("the nan comes from a category of probability 0: 0 * log 0 is nan in floating point; clamp before "
                "the log (mean.clamp_min(1e-12).log()), or use torch.xlogy(mean, mean), so that an unused category "
                "adds 0")
    return None


def _collapsed_batches():
    generator = torch.Generator().manual_seed(4)
    unused = (torch.randn(7, 5, generator=generator) * 2).softmax(dim=1)
    unused = torch.cat([unused[:, :2], torch.zeros(7, 1), unused[:, 2:]], dim=1)  # category 2 never used
    one_hot = F.one_hot(torch.full((6,), 3), 5).float()  # every image certain of category 3
    return [Case((unused,), "a batch of 7 in which category 2 of 6 has probability exactly 0 for every image",
                 _unused_category_hint),
            Case((one_hot,), "a collapsed batch: 6 one-hot rows, all on category 3 of 5", _unused_category_hint)]


BALANCE_PENALTY = Exercise(
    "balance_penalty", models.balance_penalty, _category_probabilities, _collapsed_batches,
    "a category never used, a batch all on one category",
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


def _clusters(generator, k, empty=(), tie=None):
    """k clusters; the `empty` ones hold no image, each other one eight images: five of one digit and three of others
    (a clear majority), except the `tie` cluster: three images each of two digits and two of a third."""
    clusters, labels = [], []
    for cluster in range(k):
        if cluster in empty:
            continue
        digits = torch.randperm(N_CLASSES, generator=generator)
        if cluster == tie:
            members = [int(digits[0])] * 3 + [int(digits[1])] * 3 + [int(digits[2])] * 2
        else:
            others = digits[1 + torch.randint(N_CLASSES - 1, (3,), generator=generator)]
            members = [int(digits[0])] * 5 + others.tolist()
        clusters += [cluster] * len(members)
        labels += members
    order = torch.randperm(len(labels), generator=generator)
    return torch.tensor(clusters, dtype=torch.long)[order], torch.tensor(labels, dtype=torch.long)[order], k


def _empty(empty) -> str:
    if not empty:
        return "no cluster empty"
    return f"cluster {empty[0]} empty" if len(empty) == 1 else f"clusters {', '.join(map(str, empty))} empty"


def _clusters_and_labels(generator):
    """A random number of clusters; each one empty with probability 1/3 (any of them, possibly none or several)."""
    k = int(torch.randint(3, 9, (1,), generator=generator))
    empty = tuple(i for i in range(k) if torch.rand(1, generator=generator) < 1 / 3)
    if len(empty) == k:
        empty = empty[1:]
    return Case(_clusters(generator, k, empty), f"random clusters (k = {k}, {_empty(empty)})")


def _cluster_cases():
    generator = torch.Generator().manual_seed(5)
    layouts = [(4, (0,), None, "the first"), (5, (2,), None, "one in the middle"), (4, (3,), None, "the last"),
               (5, (), None, "none"), (6, (0, 3, 5), None, "several"), (3, (), 1, "none, and a tie in cluster 1")]
    return [Case(_clusters(generator, k, empty, tie), f"k = {k} clusters, {_empty(empty)} ({what})")
            for k, empty, tie, what in layouts]


def _most_common(clusters, labels, cluster) -> tuple[set[int], str]:
    """The names cluster `cluster` may get (-1 if empty; either digit of a tie) and what it holds, in words."""
    counts = torch.bincount(labels[clusters == cluster], minlength=N_CLASSES)
    if counts.sum() == 0:
        return {-1}, f"cluster {cluster} holds no image"
    best = [int(d) for d in (counts == counts.max()).nonzero().flatten()]
    if len(best) > 1:
        tied = " and ".join(map(str, best))
        return set(best), (f"cluster {cluster} holds digits {tied}, {int(counts.max())} images each: either name is "
                           f"right")
    return set(best), (f"cluster {cluster} holds {int(counts.sum())} images, {int(counts.max())} of them digit "
                       f"{best[0]}")


def _cluster_difference(exercise, answer, expected, args):
    """Each cluster's name is its most common digit (with a tie, either one), or -1 if it is empty."""
    answer, problem = as_answer(answer, expected)
    if problem:
        return problem
    clusters, labels, k = args
    for cluster in range(k):
        allowed, holds = _most_common(clusters, labels, cluster)
        if int(answer[cluster]) not in allowed:
            return (f"at index {cluster} yours is {int(answer[cluster])}, the reference {int(expected[cluster])} "
                    f"({holds})")
    return None


def _cluster_hint(answer, args):
    clusters, labels, k = args
    if answer is None or answer.dim() != 1:
        return None
    if len(answer) == k - 1:
        return f"cluster {k - 1} (the last) was never named: loop over all k = {k} clusters, range(n_clusters)"
    if len(answer) < k:
        return (f"that is {len(answer)} names for {k} clusters: one name per cluster, including the empty ones (-1); "
                f"loop over range(n_clusters), not over the clusters that occur")
    if len(answer) != k:
        return None
    wrong = [c for c in range(k) if int(answer[c]) not in _most_common(clusters, labels, c)[0]]
    if wrong == [k - 1] and int(answer[k - 1]) == -1:
        return (f"cluster {k - 1} was never named: loop over all k = {k} clusters (range(n_clusters), not "
                f"range(n_clusters - 1))")
    if any(not (clusters == c).any() for c in wrong):
        return ("an empty cluster's name is -1: start from torch.full((n_clusters,), -1) and name only the clusters "
                "that hold images")
    return None


CLUSTER_LABELS = Exercise(
    "cluster_labels", metrics.cluster_labels, _clusters_and_labels, _cluster_cases,
    "the empty cluster first, in the middle, last, none, several, and a tie",
    mistakes={
        "an empty cluster gets label -1 (no image names it)":
            lambda c, y, k: torch.stack([torch.bincount(y[c == i], minlength=N_CLASSES).argmax() for i in range(k)]),
        "each cluster is named by its least common digit; it is the most common one":
            lambda c, y, k: _named(c, y, k, lambda counts: counts.masked_fill(counts == 0, 10**9).argmin()),
    },
    hint=_cluster_hint, compare=_cluster_difference)


def _named(clusters, labels, k, pick):
    names = []
    for i in range(k):
        counts = torch.bincount(labels[clusters == i], minlength=N_CLASSES)
        names.append(pick(counts) if counts.sum() else torch.tensor(-1))
    return torch.stack(names)


def check_cluster_labels(function) -> bool:
    """Chapter 4: cluster_labels(clusters, labels, n_clusters), each cluster's majority digit (-1 if empty)."""
    return check(CLUSTER_LABELS, function)


# -- the heart of an AAE: which parameters each phase trains ----------------------------------------------------------
PHASE_ORDER = ("reconstruction", "discriminator", "generator")
PHASE_MODULES = {"reconstruction": ("encoder", "decoder"), "discriminator": ("discriminator",),
                 "generator": ("encoder",)}
# Plain SGD (an update proportional to the gradient, so a wrong loss shows), a different rate per phase (so a
# swapped optimizer shows).
PHASE_LR = {"reconstruction": 0.05, "discriminator": 0.03, "generator": 0.02}
PHASE_LOSS = {
    "reconstruction": "models.reconstruction_loss(model.decoder(model.encoder(x)), x)",
    "discriminator": ("models.bce(model.discriminator(real), 1.0) + models.bce(model.discriminator(fake), 0.0), with "
                      "`real` the prior samples passed to your function and `fake` the encoder's codes of x computed "
                      "in this phase (after the reconstruction update)"),
    "generator": "models.bce(model.discriminator(model.encoder(x)), 1.0): the current codes, called real",
}


def reference_training_step(model, x, real, optimizers) -> None:
    """One training step of an AAE, phase by phase, as models.AdversarialAutoencoder.training_step takes it (the
    solution of check_phases): each phase one loss, one backward and one step of its own optimizer."""

    def update(phase, loss):
        optimizers[phase].zero_grad()
        loss.backward()
        optimizers[phase].step()

    # 1. Reconstruction: encoder and decoder.
    update("reconstruction", models.reconstruction_loss(model.decoder(model.encoder(x)), x))
    # 2. Discriminator: prior samples are real, codes fake; no graph through the encoder.
    with torch.no_grad():
        fake = model.encoder(x)
    update("discriminator", models.bce(model.discriminator(real), 1.0) + models.bce(model.discriminator(fake), 0.0))
    # 3. Generator: the encoder makes codes the frozen discriminator calls real.
    with models.frozen(model.discriminator):
        update("generator", models.bce(model.discriminator(model.encoder(x)), 1.0))


@dataclass
class _Step:
    optimizer: str  # whose step() it was
    gradients: set  # parameters that received a gradient since the previous step
    leftover: list  # parameters of this optimizer whose .grad is not the gradient they received since then
    erased: list  # parameters of this optimizer that received a gradient that was zeroed before the step
    changed: set  # parameters this step changed
    after: dict  # name -> the parameter after the step


class _PhaseRecorder:
    """Watches a model and its optimizers: which parameters get gradients (autograd hooks) and which change at each
    optimizer step, and any change made outside the steps."""

    def __init__(self, model, optimizers):
        self.parameters = dict(model.named_parameters())
        names = {id(p): name for name, p in self.parameters.items()}
        self.updates = {phase: [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
                        for phase, optimizer in optimizers.items()}
        self.received: dict = {}  # name -> the sum of the gradients it received since the previous step
        self.steps: list[_Step] = []
        self.outside: set = set()
        self.last = self.snapshot()
        self.handles = [p.register_hook(self._receiver(name)) for name, p in self.parameters.items()]
        for phase, optimizer in optimizers.items():
            self.handles.append(optimizer.register_step_pre_hook(lambda *_, phase=phase: self._before(phase)))
            self.handles.append(optimizer.register_step_post_hook(lambda *_, phase=phase: self._after(phase)))

    def _receiver(self, name):
        def hook(gradient):
            self.received[name] = self.received.get(name, 0) + gradient.detach().clone()
        return hook

    def snapshot(self) -> dict:
        return {name: p.detach().clone() for name, p in self.parameters.items()}

    def _changed(self, before, after) -> set:
        return {name for name in before if not torch.equal(before[name], after[name])}

    def _before(self, phase):
        now = self.snapshot()
        self.outside |= self._changed(self.last, now)
        leftover, erased = [], []
        for name in self.updates[phase]:
            gradient, received = self.parameters[name].grad, self.received.get(name)
            if received is None:
                if gradient is not None and bool(gradient.any()):
                    leftover.append(name)
            elif gradient is None or not bool(gradient.any()):
                if bool(received.any()):
                    erased.append(name)
            elif not torch.allclose(gradient, received, rtol=1e-5, atol=1e-8):
                leftover.append(name)
        self.pending = (set(self.received), leftover, erased, now)
        self.received = {}

    def _after(self, phase):
        gradients, leftover, erased, before = self.pending
        now = self.snapshot()
        self.steps.append(_Step(phase, gradients, leftover, erased, self._changed(before, now), now))
        self.last = now

    def finish(self) -> set:
        """Stop watching; the parameters that received gradients after the last step."""
        self.outside |= self._changed(self.last, self.snapshot())
        for handle in self.handles:
            handle.remove()
        return set(self.received)


def _phase_model_and_batches(seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = models.AdversarialAutoencoder(latent_dim=2, hidden=(16,))
    generator = torch.Generator().manual_seed(seed)
    batches = [(torch.rand(8, 784, generator=generator), model.prior.sample(8, generator=generator))
               for _ in range(2)]
    return model, batches


def _optimizers(model) -> dict:
    return {phase: torch.optim.SGD([p for m in PHASE_MODULES[phase] for p in getattr(model, m).parameters()],
                                   lr=PHASE_LR[phase]) for phase in PHASE_ORDER}


def _run_phases(function, model, batches) -> tuple[list, str | None]:
    """Call function(model, x, real, optimizers) on each batch; per batch (steps, gradients after the last step,
    changes outside the steps), or the error's verdict."""
    optimizers = _optimizers(model)
    record = []
    for x, real in batches:
        recorder = _PhaseRecorder(model, optimizers)
        try:
            with torch.random.fork_rng(devices=[]):
                function(model, x.clone(), real.clone(), optimizers)
        except NotImplementedError:
            return record, "not implemented yet (replace the `raise NotImplementedError` with your code)"
        except Exception as error:  # the reader's code: any error is part of the answer
            return record, f"your function raised {type(error).__name__}: {error}"
        finally:
            trailing = recorder.finish()
        record.append((recorder.steps, trailing, recorder.outside))
    return record, None


def _names(names) -> str:
    return ", ".join(names)


def _by_module(names, order) -> dict[str, list[str]]:
    modules: dict[str, list[str]] = {}
    for name in order:
        if name in names:
            modules.setdefault(name.split(".")[0], []).append(name)
    return modules


def _owners(module) -> str:
    phases = [phase for phase in PHASE_ORDER if module in PHASE_MODULES[phase]]
    return " and the ".join(phases) + (" phases" if len(phases) > 1 else " phase")


def _phase_groups(steps) -> dict[str, list[_Step]]:
    """The steps of one call, phase by phase: each phase's steps end with its own optimizer's step; steps of another
    optimizer before it (or after the last phase's) belong to it."""
    groups = {phase: [] for phase in PHASE_ORDER}
    current = 0
    for step in steps:
        phase = PHASE_ORDER[current]
        groups[phase].append(step)
        if step.optimizer == phase and current < len(PHASE_ORDER) - 1:
            current += 1
    return groups


def _phase_problems(phase, steps, trailing, order) -> list[str]:
    """What is wrong with one phase: its optimizer's use, changes and gradients outside its modules, gradients left
    over or erased, a module of its own left unchanged."""
    allowed = {name for name in order if name.split(".")[0] in PHASE_MODULES[phase]}
    problems = []
    own = [step for step in steps if step.optimizer == phase]
    others = sorted({step.optimizer for step in steps} - {phase})
    if not own:
        instead = f" (it stepped {', '.join(f'optimizers[{o!r}]' for o in others)} instead)" if others else ""
        problems.append(f"it never stepped optimizers[{phase!r}]{instead}")
    else:
        if len(own) > 1:
            problems.append(f"it stepped optimizers[{phase!r}] {len(own)} times; each phase is one update")
        if others:
            problems.append(f"it also stepped {', '.join(f'optimizers[{o!r}]' for o in others)}: each phase steps its "
                            f"own optimizer, optimizers[{phase!r}]")
    changed = set().union(*(step.changed for step in steps)) if steps else set()
    for module, names in _by_module(changed - allowed, order).items():
        problems.append(f"the {module} changed ({_names(names)}), which only the {_owners(module)} may update")
    gradients = set().union(trailing, *(step.gradients for step in steps))
    for module, names in _by_module(gradients - allowed, order).items():
        if phase == "discriminator" and module == "encoder":
            problems.append(f"gradients reached the encoder ({_names(names)}) through the codes: compute them under "
                            f"torch.no_grad() (or .detach() them), so that this phase builds no graph through the "
                            f"encoder and trains the discriminator alone")
        elif phase == "generator" and module == "discriminator":
            problems.append(f"gradients reached the discriminator ({_names(names)}): freeze it while the generator's "
                            f"loss is built (with models.frozen(model.discriminator): ...), so that this phase trains "
                            f"the encoder alone")
        else:
            problems.append(f"gradients reached the {module} ({_names(names)}), which this phase does not train")
    for step in steps:
        if step.leftover:
            problems.append(f"optimizers[{step.optimizer!r}] applied gradients left over from an earlier phase or "
                            f"batch to {_names(step.leftover)}: call optimizers[{step.optimizer!r}].zero_grad() before "
                            f"each backward()")
        if step.erased:
            problems.append(f"the gradients of {_names(step.erased)} were zeroed between backward() and "
                            f"optimizers[{step.optimizer!r}].step(): call zero_grad() before backward()")
    if own and not problems:
        for module in PHASE_MODULES[phase]:
            if not any(name.split(".")[0] == module for name in changed):
                cause = ("are the codes computed under torch.no_grad() or detached here? The generator's loss must "
                         "reach the encoder through the (frozen) discriminator" if phase == "generator" else
                         f"its loss must depend on the {module}")
                problems.append(f"it left the {module} unchanged: no gradient reached it ({cause})")
    return problems


def check_phases(function) -> bool:
    """The AAE's training step, phase by phase: function(model, x, real, optimizers) takes one step for `model`, a
    small models.AdversarialAutoencoder, on the images x (8, 784), with `real` (8, 2) samples of its prior for the
    discriminator and `optimizers` {"reconstruction": over the encoder and decoder, "discriminator": over the
    discriminator, "generator": over the encoder}; each phase computes its loss, calls zero_grad(), backward() and
    step() of its own optimizer, in the order reconstruction, discriminator, generator.

    On two batches the checker verifies, per phase, which parameters got gradients (autograd hooks) and which
    changed: the reconstruction phase trains the encoder and decoder, the discriminator phase the discriminator alone
    (no gradient into the encoder: the codes under torch.no_grad()), the generator phase the encoder alone (no
    gradient into the discriminator: models.frozen); and that each update matches reference_training_step's."""
    name = "training_step"
    model, batches = _phase_model_and_batches()
    reference = copy.deepcopy(model)
    expected, _ = _run_phases(reference_training_step, reference, batches)
    record, error = _run_phases(function, model, batches)
    if error:
        print(f"{name}: {error}")
        return False
    order = list(dict(model.named_parameters()))
    for batch, ((steps, trailing, outside), (reference_steps, _, _)) in enumerate(zip(record, expected, strict=True)):
        when = ("first", "second")[batch]
        if outside:
            print(f"{name}: not yet: on the {when} batch, parameters changed outside the optimizers' step() "
                  f"({_names([n for n in order if n in outside])}): update them only with the optimizers passed in")
            return False
        if not steps:
            print(f"{name}: not yet: on the {when} batch no optimizer stepped: each phase ends with "
                  f"optimizers[phase].step()")
            return False
        groups = _phase_groups(steps)
        for index, phase in enumerate(PHASE_ORDER):
            last = phase == PHASE_ORDER[-1]
            problems = _phase_problems(phase, groups[phase], trailing if last else set(), order)
            if problems:
                print(f"{name}: not yet: in the {phase} phase ({when} batch), " + "; ".join(problems))
                return False
            after, wanted = groups[phase][-1].after, reference_steps[index].after
            differences = {n: float((after[n] - wanted[n]).abs().max()) for n in order
                           if not torch.allclose(after[n], wanted[n], rtol=1e-5, atol=1e-6)}
            if differences:
                worst = max(differences, key=differences.get)
                print(f"{name}: not yet: in the {phase} phase ({when} batch), the update differs from the "
                      f"reference's (by up to {differences[worst]:.2g}, in {worst}): its loss is {PHASE_LOSS[phase]}")
                return False
    print(f"{name}: correct (on two batches each phase trained only its own parameters and updated them as the "
          f"library's step does: reconstruction the encoder and decoder, discriminator the discriminator, generator "
          f"the encoder)")
    return True


# -- chapter 5: the typicality of a code ------------------------------------------------------------------------------
def typicality_reference(z):
    """|-log p(z) - E_p[-log p]| for N(0, I): (| ||z||^2 - d |) / 2, one number per code."""
    return (z.pow(2).sum(dim=1) - z.shape[1]).abs() / 2


def _codes(generator):
    n, d = (int(v) for v in torch.randint(2, 9, (2,), generator=generator))
    scale = float(torch.empty(()).uniform_(0.2, 2.5, generator=generator))  # inside, on and outside the shell
    return Case((scale * torch.randn(n, d, generator=generator),), f"random codes of shape ({n}, {d})")


def _typicality_cases():
    generator = torch.Generator().manual_seed(5)
    return [Case((torch.zeros(4, 8),), "codes at the mode z = 0 (the most likely point, and untypical)"),
            Case((torch.ones(3, 8),), "codes on the shell ||z||^2 = d (typical: 0)"),
            Case((torch.randn(6, 1, generator=generator),), "1-D codes"),
            Case((torch.randn(5, 5, generator=generator) * 3,), "five 5-D codes (as many codes as dimensions)")]


def _typicality_hint(answer, args):
    (z,) = args
    if answer is not None and answer.shape == (z.shape[0],) and bool((answer < 0).any()):
        return "some scores are negative: the distance from the typical value is an absolute value"
    return None


TYPICALITY = Exercise(
    "typicality", typicality_reference, _codes, _typicality_cases,
    "the mode, the shell, 1-D codes, as many codes as dimensions",
    mistakes={
        "this is -log p(z) up to a constant, the density score: it calls the mode the most normal code; subtract the "
        "typical value d / 2 and take the absolute value": lambda z: z.pow(2).sum(dim=1) / 2,
        "d is the code's dimension, z.shape[1], not the number of codes z.shape[0]":
            lambda z: (z.pow(2).sum(dim=1) - z.shape[0]).abs() / 2,
        "||z|| is not squared: -log p(z) has ||z||^2 / 2": lambda z: (z.norm(dim=1) - z.shape[1]).abs() / 2,
        "the factor 1/2 of -log p(z) = ||z||^2 / 2 + const is missing": lambda z: (z.pow(2).sum(dim=1)
                                                                                 - z.shape[1]).abs(),
    },
    hint=_typicality_hint)


def check_typicality(function) -> bool:
    """Chapter 5: typicality(z), the typicality score |-log p(z) - E[-log p]| of codes z (n, d) under N(0, I)."""
    return check(TYPICALITY, function)
