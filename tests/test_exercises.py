"""The exercise checkers: each passes the library's own implementation and correct answers written as a reader would,
fails the known wrong answers (each on a case built to catch it) and names the typical mistakes."""

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from saae_lib import exercises, metrics, models

CHECKERS = {  # checker -> a correct answer written as a reader would
    exercises.check_reconstruction_loss: lambda logits, x: F.binary_cross_entropy_with_logits(logits, x),
    exercises.check_discriminator_loss: lambda real, fake: (
        F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
        + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))),
    exercises.check_decoder_input: lambda z, y: torch.cat([F.one_hot(y, 10).float(), z], dim=1),
    exercises.check_balance_penalty: lambda p: math.log(p.shape[1]) + torch.xlogy(p.mean(0), p.mean(0)).sum(),
    exercises.check_cluster_labels: metrics.cluster_labels,
}
EXERCISES = [exercises.RECONSTRUCTION_LOSS, exercises.DISCRIMINATOR_LOSS, exercises.DECODER_INPUT,
             exercises.BALANCE_PENALTY, exercises.CLUSTER_LABELS]


def verdict(capsys) -> str:
    return capsys.readouterr().out.strip()


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
def test_a_correct_answer_passes(checker, capsys):
    assert checker(CHECKERS[checker]) is True
    assert "correct (matches the library on 5 random cases and " in verdict(capsys)


def test_the_references_pass(capsys):
    assert exercises.check_reconstruction_loss(models.reconstruction_loss)
    assert exercises.check_discriminator_loss(lambda real, fake: models.bce(real, 1.0) + models.bce(fake, 0.0))
    assert exercises.check_balance_penalty(models.balance_penalty)
    assert exercises.check_cluster_labels(metrics.cluster_labels)


@pytest.mark.parametrize("exercise, mistake", [(e, m) for e in EXERCISES for m in e.mistakes],
                         ids=[f"{e.name}: {m[:30]}" for e in EXERCISES for m in e.mistakes])
def test_each_typical_mistake_is_named(exercise, mistake, capsys):
    assert exercises.check(exercise, exercise.mistakes[mistake]) is False
    out = verdict(capsys)
    assert out.startswith(f"{exercise.name}: not yet: for ") and "the reference" in out
    assert out.endswith(". " + mistake[0].upper() + mistake[1:])


def test_unfinished_broken_and_other_wrong_answers(capsys):
    def unfinished(logits, x):
        raise NotImplementedError

    assert exercises.check_reconstruction_loss(unfinished) is False
    assert "not implemented yet" in verdict(capsys)
    assert exercises.check_reconstruction_loss(lambda logits, x: logits.nonexistent) is False
    assert "raised AttributeError" in verdict(capsys)
    assert exercises.check_reconstruction_loss(lambda logits, x: torch.zeros(3)) is False
    assert "returned a tensor of shape (3,) where one number (a 0-dim tensor) is expected" in verdict(capsys)
    assert exercises.check_balance_penalty(lambda p: 0.123) is False
    assert "returned 0.123, the reference 0.1327" in verdict(capsys)
    assert exercises.check_reconstruction_loss(lambda logits, x: None) is False
    assert "returned None (is the `return` missing?)" in verdict(capsys)


def test_the_readers_inputs_cannot_change_the_reference(capsys):
    def in_place(logits, x):
        x.zero_()  # a reader's function may modify its arguments: the checker passes copies
        return models.reconstruction_loss(logits, x)

    assert exercises.check_reconstruction_loss(in_place) is False
    assert "not yet" in verdict(capsys)


# -- the messages: the first value that differs, shapes and dtypes said plainly ------------------------------------
def test_a_scalar_wrapped_in_a_tensor_of_shape_1_is_named_as_such(capsys):
    assert exercises.check_reconstruction_loss(lambda logits, x: models.reconstruction_loss(logits, x)[None]) is False
    out = verdict(capsys)
    assert "returned a tensor of shape (1,) (1.4002) where a scalar (a 0-dim tensor, shape ()) is expected" in out
    assert "(the reference 1.4002): drop the extra dimension" in out


def test_numbers_are_written_with_the_digits_that_tell_them_apart(capsys):
    assert exercises.check_reconstruction_loss(lambda logits, x: models.reconstruction_loss(logits, x) + 3e-4) is False
    assert "it returned 1.4005, the reference 1.4002" in verdict(capsys)
    assert exercises._pair(1.40021, 1.40024) == ("1.40021", "1.40024")  # never "1.4002, the reference 1.4002"


def test_a_tensor_answer_names_its_first_differing_value(capsys):
    def almost(z, labels):
        out = torch.cat([F.one_hot(labels, 10).float(), z], dim=1)
        out[1, 11] += 1
        return out

    assert exercises.check_decoder_input(almost) is False
    out = verdict(capsys)
    assert "differs from the reference in 1 of " in out and "the first at index (1, 11): yours " in out
    assert ", the reference " in out and "a tensor of shape (5,), the reference a tensor of shape (5,)" not in out


def test_dtype_mismatches_are_said_plainly(capsys):
    assert exercises.check_decoder_input(lambda z, y: torch.cat([F.one_hot(y, 10), z.long()], dim=1)) is False
    assert "returned a tensor of dtype torch.int64 where floats are expected (torch.float32)" in verdict(capsys)
    assert exercises.check_cluster_labels(lambda c, y, k: metrics.cluster_labels(c, y, k).float()) is False
    assert "dtype torch.float32 where integers are expected (torch.int64)" in verdict(capsys)


# -- hole 1: the loss through sigmoid(l) -----------------------------------------------------------------------------
def naive_loss(logits, x):
    p = torch.sigmoid(logits)
    return -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).mean()


def clamped_naive_loss(logits, x):
    p = torch.sigmoid(logits).clamp(1e-7, 1 - 1e-7)
    return -(x * torch.log(p) + (1 - x) * torch.log(1 - p)).mean()


def test_the_extreme_logit_cases_break_the_naive_formula():
    cases = exercises.RECONSTRUCTION_LOSS.edge_cases()
    assert [case.what.split(" and")[0] for case in cases] == ["logits of ±40", "logits of ±100", "logits of ±15"]
    assert all(case.args[0].abs().min() >= 15 for case in cases)
    large, huge, moderate = (naive_loss(*case.args) for case in cases)
    assert torch.isinf(large) and torch.isnan(huge)
    reference = models.reconstruction_loss(*cases[2].args)
    assert abs(float(moderate - reference)) > 1e-4 * float(reference)  # finite, but beyond the tolerance


@pytest.mark.parametrize("wrong, message", [
    (naive_loss, "for logits of ±40 and beyond (3 images), it returned inf, the reference 20.157. The inf (or nan) "
                 "comes from logits of ±17 and beyond"),
    (lambda logits, x: F.binary_cross_entropy(torch.sigmoid(logits), x),
     "for logits of ±40 and beyond (3 images), it returned 34.521, the reference 20.157. Large logits lose their "
     "digits"),
    (clamped_naive_loss, "for logits of ±40 and beyond (3 images), it returned 7.9832, the reference 20.157"),
], ids=["naive formula", "BCE on sigmoid(logits)", "naive formula with a clamp"])
def test_the_loss_through_sigmoid_fails_on_extreme_logits(wrong, message, capsys):
    assert exercises.check_reconstruction_loss(wrong) is False
    out = verdict(capsys)
    assert out.startswith(f"reconstruction_loss: not yet: {message}")
    assert out.endswith("the log-sigmoid form (log sigmoid(l) = F.logsigmoid(l), log(1 - sigmoid(l)) = "
                        "F.logsigmoid(-l)) or F.binary_cross_entropy_with_logits")


def test_the_naive_formula_fails_on_the_precision_case_alone():
    """At ±15 sigmoid(l) is not yet 1 in float32, so nothing overflows: the tolerance alone catches the lost digits."""
    case = exercises.RECONSTRUCTION_LOSS.edge_cases()[2]
    only = exercises.Exercise("reconstruction_loss", models.reconstruction_loss, lambda g: case)
    assert exercises.check(only, naive_loss, trials=1) is False
    assert exercises.check(only, lambda logits, x: F.binary_cross_entropy(torch.sigmoid(logits), x), trials=1) is False


@pytest.mark.parametrize("stable", [
    lambda logits, x: -(x * F.logsigmoid(logits) + (1 - x) * F.logsigmoid(-logits)).mean(),
    lambda logits, x: (logits.clamp(min=0) - logits * x + torch.log1p(torch.exp(-logits.abs()))).mean(),
    lambda logits, x: (F.softplus(logits) - x * logits).mean(),
], ids=["log-sigmoid form", "max(l, 0) - l x + log(1 + exp(-|l|))", "softplus(l) - l x"])
def test_the_stable_formulas_pass(stable, capsys):
    assert exercises.check_reconstruction_loss(stable) is True
    assert verdict(capsys) == ("reconstruction_loss: correct (matches the library on 5 random cases and 3 edge cases: "
                               "logits of ±40, ±100 and ±15)")


def test_the_discriminator_loss_through_sigmoid_fails_on_extreme_logits(capsys):
    def naive(real, fake):
        return -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()

    assert exercises.check_discriminator_loss(naive) is False
    assert verdict(capsys).startswith("discriminator_loss: not yet: for logits of ±40 (4 of each), it returned inf, "
                                      "the reference 40. The inf comes from large logits")


# -- hole 2: the balance term without a clamp --------------------------------------------------------------------------
def unclamped_balance(p):
    mean = p.mean(dim=0)
    return math.log(len(mean)) + (mean * mean.log()).sum()


def test_both_collapsed_batches_make_the_unclamped_log_nan():
    unused, one_hot = exercises.BALANCE_PENALTY.edge_cases()
    assert (unused.args[0][:, 2] == 0).all() and (one_hot.args[0].sum(0) == torch.tensor([0, 0, 0, 6, 0.0])).all()
    for case in (unused, one_hot):
        assert torch.isnan(unclamped_balance(*case.args)) and torch.isfinite(models.balance_penalty(*case.args))


def test_the_balance_term_without_a_clamp_fails(capsys):
    assert exercises.check_balance_penalty(unclamped_balance) is False
    assert verdict(capsys) == (
        "balance_penalty: not yet: for a batch of 7 in which category 2 of 6 has probability exactly 0 for every "
        "image, it returned nan, the reference 0.39781. The nan comes from a category of probability 0: 0 * log 0 is "
        "nan in floating point; clamp before the log (mean.clamp_min(1e-12).log()), or use torch.xlogy(mean, mean), "
        "so that an unused category adds 0")


def test_the_one_hot_batch_catches_the_unclamped_log_on_its_own(capsys):
    case = exercises.BALANCE_PENALTY.edge_cases()[1]
    only = exercises.Exercise("balance_penalty", models.balance_penalty, lambda g: case)
    assert exercises.check(only, unclamped_balance, trials=1) is False
    assert "6 one-hot rows, all on category 3 of 5, it returned nan, the reference 1.6094" in verdict(capsys)


@pytest.mark.parametrize("clamped", [
    lambda p: math.log(p.shape[1]) + (p.mean(0) * p.mean(0).clamp_min(1e-12).log()).sum(),
    lambda p: math.log(p.shape[1]) + (p.mean(0) * (p.mean(0) + 1e-12).log()).sum(),
    lambda p: math.log(p.shape[1]) - torch.special.entr(p.mean(0)).sum(),
], ids=["clamp_min", "epsilon", "entr"])
def test_the_balance_term_with_a_clamp_passes(clamped):
    assert exercises.check_balance_penalty(clamped) is True


# -- hole 3: naming k - 1 clusters -------------------------------------------------------------------------------------
def names_loop(stop):
    """A reader's naming loop over range(stop(k))."""

    def cluster_labels(clusters, labels, k):
        names = torch.full((k,), -1)
        for c in range(stop(k)):
            members = labels[clusters == c]
            if len(members):
                names[c] = torch.bincount(members, minlength=10).argmax()
        return names
    return cluster_labels


def test_empty_clusters_sit_anywhere_and_one_case_has_a_tie():
    def empty(case):
        clusters, _, k = case.args
        return [c for c in range(k) if not (clusters == c).any()]

    fixed = exercises.CLUSTER_LABELS.edge_cases()
    assert [(case.args[2], empty(case)) for case in fixed] == [(4, [0]), (5, [2]), (4, [3]), (5, []),
                                                               (6, [0, 3, 5]), (3, [])]
    clusters, labels, _ = fixed[-1].args
    counts = torch.bincount(labels[clusters == 1], minlength=10)
    assert (counts == counts.max()).sum() == 2  # a tie
    generator = torch.Generator().manual_seed(0)
    randoms = [exercises.CLUSTER_LABELS.inputs(generator) for _ in range(40)]
    positions = {("first" if c == 0 else "last" if c == case.args[2] - 1 else "middle")
                 for case in randoms for c in empty(case)}
    assert positions == {"first", "middle", "last"} and any(not empty(case) for case in randoms)


def test_naming_only_k_minus_1_clusters_fails(capsys):
    assert exercises.check_cluster_labels(names_loop(lambda k: k - 1)) is False
    assert verdict(capsys) == (
        "cluster_labels: not yet: for random clusters (k = 5, clusters 1, 2, 3 empty), at index 4 yours is -1, the "
        "reference 4 (cluster 4 holds 8 images, 5 of them digit 4). Cluster 4 was never named: loop over all k = 5 "
        "clusters (range(n_clusters), not range(n_clusters - 1))")


def test_the_fixed_layouts_catch_the_k_minus_1_loop_wherever_the_last_cluster_holds_images():
    wrong = names_loop(lambda k: k - 1)
    caught = [exercises.difference(wrong(*case.args), metrics.cluster_labels(*case.args)) is not None
              for case in exercises.CLUSTER_LABELS.edge_cases()]
    assert caught == [True, True, False, True, False, True]  # the last cluster is empty in the third and fifth


@pytest.mark.parametrize("wrong, message", [
    (lambda c, y, k: names_loop(lambda k: k)(c, y, k)[:-1],
     "it returned a tensor of shape (4,), the reference a tensor of shape (5,). Cluster 4 (the last) was never "
     "named: loop over all k = 5 clusters, range(n_clusters)"),
    (lambda c, y, k: torch.stack([torch.bincount(y[c == i], minlength=10).argmax() for i in c.unique()]),
     "it returned a tensor of shape (2,), the reference a tensor of shape (5,). That is 2 names for 5 clusters: one "
     "name per cluster, including the empty ones (-1)"),
], ids=["k - 1 names", "names of the clusters that occur"])
def test_too_few_names_are_explained(wrong, message, capsys):
    assert exercises.check_cluster_labels(wrong) is False
    assert message in verdict(capsys)


def test_either_digit_of_a_tie_is_a_right_name(capsys):
    def most_common(clusters, labels, k):  # ties go to the digit met first, not the smaller one
        return torch.tensor([Counter(labels[clusters == c].tolist()).most_common(1)[0][0] if (clusters == c).any()
                             else -1 for c in range(k)])

    def larger_of_a_tie(clusters, labels, k):
        return torch.tensor([9 - int(torch.bincount(labels[clusters == c], minlength=10).flip(0).argmax())
                             if (clusters == c).any() else -1 for c in range(k)])

    assert exercises.check_cluster_labels(most_common) is True
    assert exercises.check_cluster_labels(larger_of_a_tie) is True

    def third_digit_of_a_tie(clusters, labels, k):
        names = metrics.cluster_labels(clusters, labels, k)
        for c in range(k):
            counts = torch.bincount(labels[clusters == c], minlength=10)
            if counts.max() > 0 and (counts == counts.max()).sum() > 1:
                names[c] = int((counts == 2).nonzero()[0])
        return names

    capsys.readouterr()
    assert exercises.check_cluster_labels(third_digit_of_a_tie) is False
    assert verdict(capsys).startswith(
        "cluster_labels: not yet: for k = 3 clusters, no cluster empty (none, and a tie in cluster 1), at index 1 "
        "yours is ")


# -- the phases of an AAE's training step ------------------------------------------------------------------------------
def step(no_grad=True, detach=False, freeze=True, generator_optimizer="generator", extra_discriminator_step=False,
         zero_grad="before", discriminator_scale=1.0, own_prior_samples=False):
    """A reader's training step, right by default; each option makes one mistake."""

    def training_step(model, x, real, optimizers):
        def update(phase, loss, optimizer=None):
            optimizer = optimizers[optimizer or phase]
            if zero_grad == "before":
                optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if zero_grad == "after":
                optimizer.zero_grad()

        update("reconstruction", models.reconstruction_loss(model.decoder(model.encoder(x)), x))
        if own_prior_samples:
            real = model.prior.sample(len(x))
        if no_grad:
            with torch.no_grad():
                fake = model.encoder(x)
        else:
            fake = model.encoder(x).detach() if detach else model.encoder(x)
        update("discriminator", discriminator_scale * (models.bce(model.discriminator(real), 1.0)
                                                       + models.bce(model.discriminator(fake), 0.0)))
        with models.frozen(*([model.discriminator] if freeze else [])):
            generator = models.bce(model.discriminator(model.encoder(x)), 1.0)
        update("generator", generator, generator_optimizer)
        if extra_discriminator_step:
            optimizers["discriminator"].step()

    return training_step


DISCRIMINATOR = "discriminator.0.weight, discriminator.0.bias, discriminator.2.weight, discriminator.2.bias"
ENCODER = "encoder.0.weight, encoder.0.bias, encoder.2.weight, encoder.2.bias"


@pytest.mark.parametrize("answer", [exercises.reference_training_step, step(), step(no_grad=False, detach=True),
                                    step(zero_grad="after")], ids=["reference", "reader", "detach", "zero_grad after"])
def test_a_right_training_step_passes(answer, capsys):
    state = torch.get_rng_state()
    assert exercises.check_phases(answer) is True
    assert verdict(capsys).startswith("training_step: correct (on two batches each phase trained only its own")
    assert torch.equal(torch.get_rng_state(), state)  # the notebook's random numbers are left alone


@pytest.mark.parametrize("answer, message", [
    (step(no_grad=False), f"in the discriminator phase (first batch), gradients reached the encoder ({ENCODER}) "
                          f"through the codes: compute them under torch.no_grad() (or .detach() them)"),
    (step(freeze=False), f"in the generator phase (first batch), gradients reached the discriminator "
                         f"({DISCRIMINATOR}): freeze it while the generator's loss is built (with "
                         f"models.frozen(model.discriminator): ...)"),
    (step(freeze=False, extra_discriminator_step=True),
     f"in the generator phase (first batch), it also stepped optimizers['discriminator']: each phase steps its own "
     f"optimizer, optimizers['generator']; the discriminator changed ({DISCRIMINATOR}), which only the "
     f"discriminator phase may update"),
    (step(freeze=False, generator_optimizer="discriminator"),
     f"in the generator phase (first batch), it never stepped optimizers['generator'] (it stepped "
     f"optimizers['discriminator'] instead); the discriminator changed ({DISCRIMINATOR}), which only the "
     f"discriminator phase may update"),
    (step(zero_grad="never"), f"in the generator phase (first batch), optimizers['generator'] applied gradients left "
                              f"over from an earlier phase or batch to {ENCODER}: call "
                              f"optimizers['generator'].zero_grad() before each backward()"),
    (step(discriminator_scale=0.5), "in the discriminator phase (first batch), the update differs from the "
                                    "reference's (by up to "),
    (step(own_prior_samples=True), "in the discriminator phase (first batch), the update differs from the "
                                   "reference's"),
], ids=["no no_grad", "discriminator not frozen", "discriminator stepped in the generator phase",
        "generator phase with the discriminator's optimizer", "no zero_grad", "discriminator loss halved",
        "its own prior samples"])
def test_each_wrong_training_step_is_caught_naming_the_phase_and_parameters(answer, message, capsys):
    assert exercises.check_phases(answer) is False
    assert verdict(capsys).startswith(f"training_step: not yet: {message}")


def test_wrong_training_steps_of_other_kinds(capsys):
    def nothing(model, x, real, optimizers):
        pass

    def by_hand(model, x, real, optimizers):
        exercises.reference_training_step(model, x, real, optimizers)
        with torch.no_grad():
            model.decoder.net[0].bias.add_(0.1)

    def unfinished(model, x, real, optimizers):
        raise NotImplementedError

    assert exercises.check_phases(nothing) is False
    assert "on the first batch no optimizer stepped" in verdict(capsys)
    assert exercises.check_phases(by_hand) is False
    assert "parameters changed outside the optimizers' step() (decoder.net.0.bias)" in verdict(capsys)
    assert exercises.check_phases(unfinished) is False
    assert verdict(capsys).startswith("training_step: not implemented yet (replace the `raise NotImplementedError`")
    assert exercises.check_phases(lambda model, x, real, optimizers: model.nonexistent) is False
    assert "training_step: your function raised AttributeError" in verdict(capsys)


def test_typicality_checker_accepts_the_library_and_names_the_mistakes(capsys):
    import numpy as np

    from saae_lib import anomaly
    from saae_lib.models import AdversarialAutoencoder

    def library(z):  # the library's own score, through a model whose encoder returns z itself
        model = AdversarialAutoencoder(latent_dim=z.shape[1], hidden=(4,), prior="gaussian")
        model.encode = lambda x: x[:, : z.shape[1]]
        images = torch.zeros(len(z), 784)
        images[:, : z.shape[1]] = z
        return torch.as_tensor(np.asarray(anomaly.typicality_score(model, images)))

    assert not exercises.check_typicality(lambda z: (_ for _ in ()).throw(NotImplementedError))
    assert "not implemented yet" in capsys.readouterr().out
    # the library estimates E[-log p] from 10,000 samples, so it agrees with the closed form to ~1e-2
    exercises.TYPICALITY.atol, saved = 0.05, exercises.TYPICALITY.atol
    try:
        assert exercises.check_typicality(library)
    finally:
        exercises.TYPICALITY.atol = saved
    assert exercises.check_typicality(lambda z: (z.pow(2).sum(1) - z.shape[1]).abs() / 2)
    assert "correct" in capsys.readouterr().out
    for wrong, says in [(lambda z: z.pow(2).sum(1) / 2, "density score"),
                        (lambda z: (z.pow(2).sum(1) - z.shape[0]).abs() / 2, "z.shape[1]"),
                        (lambda z: (z.norm(dim=1) - z.shape[1]).abs() / 2, "not squared"),
                        (lambda z: (z.pow(2).sum(1) - z.shape[1]) / 2, "absolute value"),
                        (lambda z: (z.pow(2).sum(1) - z.shape[1]).abs().mean() / 2, "shape")]:
        assert not exercises.check_typicality(wrong)
        assert says in capsys.readouterr().out
