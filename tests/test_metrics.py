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


# -- precision and recall of generated digits -------------------------------------------------------------------
class FirstPixelsJudge:
    """A judge whose features are an image's first two pixels: lets a test place each set's features exactly."""

    def embed(self, images):
        return images[:, :2]


def test_manifold_precision_recall_of_a_set_against_itself_is_perfect():
    points = torch.randn(200, 5, generator=gen(0))
    assert metrics.manifold_precision_recall(points, points) == (1.0, 1.0)


def test_a_collapsed_generator_keeps_its_precision_and_loses_its_recall():
    """One real point drawn again and again: realistic (precision 1), no variety (recall: that one point)."""
    real = torch.randn(100, 3, generator=gen(1))
    precision, recall = metrics.manifold_precision_recall(real, real[:1].repeat(50, 1))
    assert precision == 1.0 and recall == pytest.approx(1 / 100)


def test_samples_away_from_the_real_set_have_neither():
    real = torch.randn(300, 2, generator=gen(2))
    precision, recall = metrics.manifold_precision_recall(real, torch.randn(300, 2, generator=gen(3)) + 20)
    assert (precision, recall) == (0.0, 0.0)


def test_samples_of_the_same_distribution_score_high_and_a_narrow_one_loses_recall():
    real = torch.randn(500, 2, generator=gen(4))
    same = metrics.manifold_precision_recall(real, torch.randn(500, 2, generator=gen(5)))
    narrow = metrics.manifold_precision_recall(real, 0.2 * torch.randn(500, 2, generator=gen(6)))
    assert min(same) > 0.8
    assert narrow[0] > 0.95 and narrow[1] < same[1] - 0.3


def test_manifold_precision_recall_argument_checks():
    with pytest.raises(ValueError, match="one width"):
        metrics.manifold_precision_recall(torch.zeros(10, 2), torch.zeros(10, 3))
    with pytest.raises(ValueError, match="more than k=3"):
        metrics.manifold_precision_recall(torch.randn(3, 2), torch.randn(10, 2))


def digit_images(labels, offset, generator):
    """Images whose first two pixels sit around (10 * (label + offset), 0)."""
    images = torch.zeros(len(labels), 784)
    images[:, :2] = torch.randn(len(labels), 2, generator=generator)
    images[:, 0] += 10 * (labels.float() + offset)
    return images


def test_precision_recall_compares_each_digit_with_the_same_digit():
    """Digits drawn like the real ones score high; each label drawn like the next digit (readable digits, the wrong
    ones) scores zero, although pooled over all digits the two sets would look alike."""
    labels = torch.arange(10).repeat_interleave(60)
    reference = digit_images(labels, 0, gen(7))
    right = metrics.precision_recall(FirstPixelsJudge(), digit_images(labels, 0, gen(8)), labels, reference, labels)
    shifted = metrics.precision_recall(FirstPixelsJudge(), digit_images(labels, 1, gen(9)), labels, reference, labels)
    assert min(right) > 0.8
    assert shifted == (0.0, 0.0)


def test_precision_recall_needs_a_shared_digit():
    with pytest.raises(ValueError, match="share no digit"):
        metrics.precision_recall(FirstPixelsJudge(), torch.zeros(10, 784), torch.zeros(10, dtype=torch.long),
                                 torch.zeros(10, 784), torch.ones(10, dtype=torch.long))


def test_generate_for_draws_one_digit_per_label_reproducibly():
    model = FakeSupervised()
    labels = torch.tensor([3, 1, 4, 1, 5, 9, 2, 6])
    images = metrics.generate_for(model, labels, seed=1, batch_size=3)
    assert images.shape == (8, 784)
    assert torch.equal((images[:, 0] * 10).round().long(), labels)
    assert torch.equal(images, metrics.generate_for(model, labels, seed=1))


def test_generate_for_needs_a_decoder_that_takes_the_digit():
    with pytest.raises(ValueError, match="takes the digit"):
        metrics.generate_for(IdentityModel(), torch.zeros(3, dtype=torch.long))


def test_the_judges_features_are_what_its_last_layer_reads():
    from saae_lib.digit_classifier import DigitClassifier
    torch.manual_seed(0)
    judge = DigitClassifier()
    images = torch.rand(7, 784, generator=gen(10))
    features = judge.embed(images, batch_size=3)
    assert features.shape == (7, 256) and not judge.training
    assert torch.equal(judge.head[-1](features).argmax(1), judge.predict(images))
