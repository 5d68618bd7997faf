"""Tests for saae_lib.priors: sample statistics, per-label regions, densities and the factory."""

import math

import pytest
import torch

from saae_lib.priors import CategoricalPrior, GaussianPrior, MixtureOfGaussiansPrior, SwissRollPrior, make_prior


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- Gaussian ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dim, std", [(2, 1.0), (5, 2.5)])
def test_gaussian_mean_and_std(dim, std):
    z = GaussianPrior(dim, std).sample(20000, generator=gen())
    assert z.shape == (20000, dim) and z.dtype == torch.float32
    assert z.mean(0).abs().max() < 0.05 * std
    assert (z.std(0) / std - 1).abs().max() < 0.03


def test_gaussian_sampling_is_seeded():
    prior = GaussianPrior(3)
    assert torch.equal(prior.sample(10, generator=gen(1)), prior.sample(10, generator=gen(1)))
    assert not torch.equal(prior.sample(10, generator=gen(1)), prior.sample(10, generator=gen(2)))


def test_gaussian_log_density_matches_torch_distributions():
    prior = GaussianPrior(3, std=1.7)
    points = torch.randn(50, 3, generator=gen()) * 3
    expected = torch.distributions.Normal(0.0, 1.7).log_prob(points).sum(1)
    torch.testing.assert_close(prior.log_density(points), expected, rtol=1e-5, atol=1e-5)
    assert prior.has_density


def test_gaussian_refuses_labels_and_bad_arguments():
    with pytest.raises(ValueError, match="without labels"):
        GaussianPrior(2).sample(3, labels=torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError):
        GaussianPrior(0)
    with pytest.raises(ValueError):
        GaussianPrior(2, std=0.0)


# -- mixture of Gaussians ---------------------------------------------------------------------------------------
def test_mixture_samples_land_near_their_component():
    prior = MixtureOfGaussiansPrior()
    labels = torch.arange(10).repeat_interleave(300)
    z = prior.sample(len(labels), labels=labels, generator=gen())
    assert z.shape == (3000, 2)
    angle = torch.atan2(z[:, 1], z[:, 0])
    expected = 2 * math.pi * labels / 10
    difference = torch.remainder(angle - expected + math.pi, 2 * math.pi) - math.pi  # wrapped to (-pi, pi]
    # neighbouring modes are 2*pi/10 = 0.63 rad apart: every sample sits within a fraction of that of its own
    assert (difference.abs() < 0.3).float().mean() > 0.99
    assert difference.abs().median() < 0.1
    assert (z.norm(dim=1).mean() - prior.radius).abs() < 0.1


def test_mixture_without_labels_uses_every_component():
    prior = MixtureOfGaussiansPrior()
    z = prior.sample(5000, generator=gen())
    nearest = (z @ prior.directions.T).argmax(1)
    counts = torch.bincount(nearest, minlength=10).float() / len(z)
    assert (counts - 0.1).abs().max() < 0.03


def test_mixture_label_checks():
    prior = MixtureOfGaussiansPrior()
    with pytest.raises(ValueError, match="0..9"):
        prior.sample(2, labels=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="labels"):
        prior.sample(3, labels=torch.tensor([0, 1]))


def test_mixture_log_density_integrates_to_one():
    prior = MixtureOfGaussiansPrior()
    step = 0.02
    axis = torch.arange(-6, 6, step) + step / 2
    grid = torch.cartesian_prod(axis, axis)
    total = float(prior.log_density(grid).double().exp().sum() * step**2)
    assert total == pytest.approx(1.0, abs=0.01)


def test_mixture_log_density_accepts_float64_points():
    """Like the Gaussian's, the mixture's density takes points of any float dtype (e.g. from a NumPy grid)."""
    points = torch.randn(20, 2, generator=gen(), dtype=torch.float64)
    prior = MixtureOfGaussiansPrior()
    density = prior.log_density(points)
    assert density.shape == (20,)
    torch.testing.assert_close(density.float(), prior.log_density(points.float()), rtol=1e-4, atol=1e-4)


def test_mixture_log_density_is_high_at_modes_and_low_at_origin():
    prior = MixtureOfGaussiansPrior()
    modes = prior.directions * prior.radius
    assert (prior.log_density(modes) > prior.log_density(torch.zeros(1, 2))).all()


# -- swiss roll -------------------------------------------------------------------------------------------------
def test_swiss_roll_segments_are_ordered_by_label():
    prior = SwissRollPrior()
    labels = torch.arange(10).repeat_interleave(200)
    z = prior.sample(len(labels), labels=labels, generator=gen())
    assert z.shape == (2000, 2)
    radius = z.norm(dim=1)
    for k in range(9):  # the spiral's parameter grows with the label: segment k ends where k + 1 begins
        assert radius[labels == k].max() <= radius[labels == k + 1].min()
    assert radius.max() <= prior.scale + 1e-5


def test_swiss_roll_along_walks_a_piece_from_its_inner_end_and_sample_draws_from_it():
    prior = SwissRollPrior()
    labels = torch.full((5,), 3)
    points = prior.along(labels, torch.linspace(0, 0.99, 5))
    radius = points.norm(dim=1)
    assert torch.all(radius[1:] > radius[:-1])  # outwards along the piece
    assert torch.allclose(prior.along(torch.tensor([3]), torch.tensor([1.0])),
                          prior.along(torch.tensor([4]), torch.tensor([0.0])))  # piece 3 ends where 4 begins
    drawn = prior.sample(4, labels=labels[:4], generator=gen())
    positions = torch.rand(4, generator=gen())  # the positions sample drew, from the same stream
    assert torch.equal(drawn, prior.along(labels[:4], positions))


def test_swiss_roll_has_no_density():
    prior = SwissRollPrior()
    assert not prior.has_density
    with pytest.raises(NotImplementedError, match="samples"):
        prior.log_density(torch.zeros(3, 2))


# -- categorical ------------------------------------------------------------------------------------------------
def test_categorical_one_hot_with_uniform_frequencies():
    prior = CategoricalPrior(10)
    y = prior.sample(20000, generator=gen())
    assert y.shape == (20000, 10) and prior.dim == 10
    assert set(y.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(y.sum(1), torch.ones(20000))
    assert (y.mean(0) - 0.1).abs().max() < 0.01


def test_categorical_with_labels_is_their_one_hot():
    y = CategoricalPrior(4).sample(3, labels=torch.tensor([2, 0, 3]))
    assert torch.equal(y, torch.tensor([[0.0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 1]]))


# -- make_prior -------------------------------------------------------------------------------------------------
def test_make_prior_by_name():
    assert isinstance(make_prior("gaussian", 7), GaussianPrior) and make_prior("gaussian", 7).dim == 7
    assert make_prior("gaussian", 3, std=2.0).std == 2.0
    assert isinstance(make_prior("mixture"), MixtureOfGaussiansPrior)
    assert isinstance(make_prior("swiss_roll"), SwissRollPrior)
    assert make_prior("mixture").dim == make_prior("swiss_roll").dim == 2


def test_make_prior_errors():
    with pytest.raises(ValueError, match="unknown prior.*gaussian"):
        make_prior("uniform")
    with pytest.raises(ValueError, match="2-D"):
        make_prior("mixture", 10)
    with pytest.raises(ValueError, match="2-D"):
        make_prior("swiss_roll", 3)
