"""The exercise checkers: each passes the library's own implementation and names the typical mistakes."""

import math

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
    exercises.check_balance_penalty: lambda p: math.log(p.shape[1]) + (p.mean(0) * p.mean(0).log()).sum(),
    exercises.check_cluster_labels: metrics.cluster_labels,
}
EXERCISES = [exercises.RECONSTRUCTION_LOSS, exercises.DISCRIMINATOR_LOSS, exercises.DECODER_INPUT,
             exercises.BALANCE_PENALTY, exercises.CLUSTER_LABELS]


@pytest.mark.parametrize("checker", CHECKERS, ids=lambda c: c.__name__)
def test_a_correct_answer_passes(checker, capsys):
    assert checker(CHECKERS[checker]) is True
    assert "correct" in capsys.readouterr().out


def test_the_references_pass(capsys):
    assert exercises.check_reconstruction_loss(models.reconstruction_loss)
    assert exercises.check_balance_penalty(models.balance_penalty)
    assert exercises.check_cluster_labels(metrics.cluster_labels)


@pytest.mark.parametrize("exercise, mistake", [(e, m) for e in EXERCISES for m in e.mistakes],
                         ids=[f"{e.name}: {m[:30]}" for e in EXERCISES for m in e.mistakes])
def test_each_typical_mistake_is_named(exercise, mistake, capsys):
    assert exercises.check(exercise, exercise.mistakes[mistake]) is False
    out = capsys.readouterr().out.strip()
    assert out == f"{exercise.name}: not yet: {mistake}"


def test_unfinished_broken_and_other_wrong_answers(capsys):
    def unfinished(logits, x):
        raise NotImplementedError

    assert exercises.check_reconstruction_loss(unfinished) is False
    assert "not implemented yet" in capsys.readouterr().out
    assert exercises.check_reconstruction_loss(lambda logits, x: logits.nonexistent) is False
    assert "raised AttributeError" in capsys.readouterr().out
    assert exercises.check_reconstruction_loss(lambda logits, x: torch.zeros(3)) is False
    assert "returned a tensor of shape (3,), the reference" in capsys.readouterr().out
    assert exercises.check_balance_penalty(lambda p: 0.123) is False
    assert "returned 0.123" in capsys.readouterr().out


def test_the_readers_inputs_cannot_change_the_reference(capsys):
    def in_place(logits, x):
        x.zero_()  # a reader's function may modify its arguments: the checker passes copies
        return models.reconstruction_loss(logits, x)

    assert exercises.check_reconstruction_loss(in_place) is False
    assert "not yet" in capsys.readouterr().out
