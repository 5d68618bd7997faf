"""Tests for saae_lib.metrics on constructed inputs and fake models whose right answers are known."""

import pytest
import torch
from torch import nn

from saae_lib import metrics
from saae_lib.models import SamplesCodes
from saae_lib.priors import GaussianPrior, MixtureOfGaussiansPrior


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


class IdentityModel(nn.Module):
    """A perfect "autoencoder": the code is the image itself."""

    def encode(self, x):
        return x

    def decode(self, z, labels=None):
        return z

    def reconstruct(self, x, labels=None):
        return self.decode(self.encode(x))


class ZeroModel(IdentityModel):
    def reconstruct(self, x, labels=None):
        return torch.zeros_like(x)


class FirstColumnsModel(nn.Module):
    """Codes are the first two "pixels", shifted: lets a test choose the code distribution exactly."""

    def __init__(self, shift=0.0):
        super().__init__()
        self.shift = shift
        self.prior = GaussianPrior(2)

    def code_prior(self):
        return self.prior

    def encode(self, x):
        return x[:, :2] + self.shift


class FakeSupervised(SamplesCodes, nn.Module):
    """A supervised-AAE stand-in: draws label k as an image filled with k/10."""

    kind = "saae"
    label_classes = 10

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.prior = GaussianPrior(2)

    def code_prior(self):
        return self.prior

    def encode(self, x):
        return x[:, :2]

    def decode(self, z, labels):
        return (labels.float() / 10)[:, None].expand(len(z), 784).clone()

    def reconstruct(self, x, labels=None):
        if labels is None:
            raise ValueError("pass the labels")
        return self.decode(self.encode(x), labels)


class ReadingJudge:
    def predict(self, images):
        return (images[:, 0] * 10).round().long()


class ZeroJudge:
    def predict(self, images):
        return torch.zeros(len(images), dtype=torch.long)


# -- mmd --------------------------------------------------------------------------------------------------------
def test_mmd_of_same_distribution_is_near_zero():
    values = [metrics.mmd(torch.randn(400, 2, generator=gen(s)), torch.randn(400, 2, generator=gen(100 + s)))
              for s in range(3)]
    assert all(abs(v) < 0.03 for v in values)


def test_mmd_grows_with_the_shift():
    x = torch.randn(400, 2, generator=gen(1))
    y = torch.randn(400, 2, generator=gen(2))
    small, large = metrics.mmd(x, y + 0.5), metrics.mmd(x, y + 3.0)
    assert 0.05 < small < large
    assert metrics.mmd(x, y + 3.0) == pytest.approx(metrics.mmd(y + 3.0, x))  # symmetric


def test_mmd_argument_checks():
    with pytest.raises(ValueError, match="equal d"):
        metrics.mmd(torch.zeros(5, 2), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="at least two"):
        metrics.mmd(torch.zeros(1, 2), torch.zeros(5, 2))


# -- classification and clustering ------------------------------------------------------------------------------
def test_classification_error():
    labels = torch.tensor([0, 1, 2, 3])
    assert metrics.classification_error(labels.clone(), labels) == 0.0
    assert metrics.classification_error(torch.tensor([0, 1, 0, 0]), labels) == 0.5
    assert metrics.classification_error((labels + 1) % 4, labels) == 1.0


def test_classification_error_checks():
    with pytest.raises(ValueError, match="shape"):
        metrics.classification_error(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        metrics.classification_error(torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long))


def test_cluster_labels_majority_mapping():
    clusters = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2])
    labels = torch.tensor([3, 3, 5, 7, 7, 1, 1, 1, 9])
    mapping = metrics.cluster_labels(clusters, labels, n_clusters=4)
    assert mapping.tolist() == [3, 7, 1, -1]  # cluster 3 is empty


def test_clustering_error():
    mapping = torch.tensor([3, 7, 1, -1])
    clusters = torch.tensor([0, 1, 2, 3])
    assert metrics.clustering_error(clusters, torch.tensor([3, 7, 1, 0]), mapping) == 0.25  # empty cluster: wrong
    assert metrics.clustering_error(clusters[:3], torch.tensor([3, 7, 1]), mapping) == 0.0
    assert metrics.clustering_error(clusters[:2], torch.tensor([7, 3]), mapping) == 1.0


# -- reconstruction, codes, prior match -------------------------------------------------------------------------
def test_reconstruction_error_of_a_perfect_model_is_zero():
    images = torch.rand(30, 28, 28, generator=gen())
    assert metrics.reconstruction_error(IdentityModel(), images) == 0.0


def test_reconstruction_error_is_mean_squared_error_per_pixel():
    images = torch.rand(30, 784, generator=gen())
    assert metrics.reconstruction_error(ZeroModel(), images) == pytest.approx(float(images.pow(2).mean()), rel=1e-6)


def test_reconstruct_batches_and_keeps_training_mode():
    model = IdentityModel().train()
    images = torch.rand(7, 784, generator=gen())
    out = metrics.reconstruct(model, images, batch_size=3)
    assert torch.equal(out, images)
    assert model.training


def test_reconstruct_supervised_needs_labels():
    with pytest.raises(ValueError, match="labels"):
        metrics.reconstruct(FakeSupervised(), torch.rand(3, 784))
    labels = torch.tensor([0, 5, 9])
    out = metrics.reconstruct(FakeSupervised(), torch.rand(3, 784), labels)
    torch.testing.assert_close(out[:, 0], torch.tensor([0.0, 0.5, 0.9]))


def test_encode_batches():
    images = torch.rand(5, 784, generator=gen())
    assert torch.equal(metrics.encode(IdentityModel(), images, batch_size=2), images)
    assert metrics.encode(FirstColumnsModel(), images).shape == (5, 2)


def test_prior_match_is_lower_for_prior_like_codes():
    images = torch.rand(1000, 784, generator=gen())
    images[:, :2] = torch.randn(1000, 2, generator=gen(1))  # the codes FirstColumnsModel will read
    matched = metrics.prior_match(FirstColumnsModel(0.0), images, n=1000)
    shifted = metrics.prior_match(FirstColumnsModel(2.0), images, n=1000)
    assert abs(matched) < 0.05
    assert shifted > 10 * max(abs(matched), 0.01)


def test_prior_match_samples_at_random_not_the_first_n():
    """An ordered set (like MNIST's test set, cleaner half first): its first n codes are far from the prior, the set
    as a whole is not. The measure must see the whole set."""
    images = torch.zeros(4000, 784)
    images[:, :2] = torch.randn(4000, 2, generator=gen(3))
    images[:2000, :2] = images[:2000, :2] * 0.3  # the first half: squeezed codes
    whole = metrics.prior_match(FirstColumnsModel(), images, n=2000)
    first = metrics.mmd(images[:2000, :2], torch.randn(2000, 2, generator=gen(4)))
    assert whole < first / 2
    assert metrics.prior_match(FirstColumnsModel(), images, n=2000, seed=1) != whole  # the seed picks the sample


def test_prior_match_uses_the_models_own_prior():
    images = torch.zeros(500, 784)
    images[:, :2] = torch.randn(500, 2, generator=gen(2)) * 3
    model = FirstColumnsModel()
    default = metrics.prior_match(model, images)
    model.prior = GaussianPrior(2, std=3.0)  # code_prior() is the model's own
    assert metrics.prior_match(model, images) < default


# -- generated label accuracy -----------------------------------------------------------------------------------
def test_generated_label_accuracy_with_a_perfect_and_a_blind_judge():
    model = FakeSupervised()
    assert metrics.generated_label_accuracy(model, ReadingJudge(), n_per_label=20) == 1.0
    assert metrics.generated_label_accuracy(model, ZeroJudge(), n_per_label=20) == pytest.approx(0.1)


def test_generated_label_accuracy_needs_a_decoder_that_takes_the_digit():
    with pytest.raises(ValueError, match="takes the digit"):
        metrics.generated_label_accuracy(IdentityModel(), ReadingJudge())


def test_nearest_code_accuracy_reads_the_digit_off_the_codes():
    """Codes that are the digit itself give a perfect guess; codes that ignore it give the majority's share."""
    labels = torch.tensor([0, 1, 2, 3] * 5)
    images = torch.zeros(20, 784)
    images[:, 0] = labels.float() / 10  # the first "pixel" holds the digit, the code is that pixel
    model = FirstColumnsModel()
    assert metrics.nearest_code_accuracy(model, images, labels, images, labels) == 1.0
    blind = torch.zeros(20, 784)  # every code the same: every guess is the first reference label
    assert metrics.nearest_code_accuracy(model, blind, labels, blind, labels) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="one label per image"):
        metrics.nearest_code_accuracy(model, images, labels[:3], images, labels)


# -- issue-9 measures: codes in their digit's component, clusters named the paper's way -------------------------------
def test_component_accuracy_reads_which_petal_a_code_is_in():
    prior = MixtureOfGaussiansPrior()
    labels = torch.arange(10).repeat(50)
    images = torch.zeros(500, 784)
    images[:, :2] = prior.sample(500, labels=labels, generator=gen(3))  # the codes FirstColumnsModel reads
    model = FirstColumnsModel()
    model.prior = prior
    assert metrics.component_accuracy(model, images, labels) == pytest.approx(1.0, abs=0.01)
    assert metrics.component_accuracy(model, images, (labels + 1) % 10) < 0.05
    model.prior = GaussianPrior(2)
    with pytest.raises(ValueError, match="one component per digit"):
        metrics.component_accuracy(model, images, labels)


def test_cluster_labels_by_top_image():
    probabilities = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.6, 0.2, 0.2], [0.1, 0.3, 0.6]])
    labels = torch.tensor([4, 7, 1, 2])
    assert metrics.cluster_labels_by_top_image(probabilities, labels).tolist() == [4, 7, 2]
