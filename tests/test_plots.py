"""Tests for saae_lib.plots: every figure builds from tensors or arrays, bad input fails clearly, smoke runs say so."""

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure
from matplotlib.text import Text

from saae_lib import plots, settings
from saae_lib.priors import GaussianPrior, MixtureOfGaussiansPrior, SwissRollPrior

matplotlib.use("Agg")  # no display needed (switching is fine: no figure exists yet)


@pytest.fixture(autouse=True)
def real_run_and_cleanup(monkeypatch):
    # tests decide smoke mode themselves, whatever SAAE_FAST the suite runs under
    monkeypatch.setenv("SAAE_FAST", "0")
    yield
    plt.close("all")


def images(n, shape=(784,), seed=0):
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(seed))


def texts(fig):
    return [t.get_text() for t in fig.findobj(Text)]


def scatters(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)]


def constant_decode(z, labels=None):
    """A fake decoder: each image is filled with a value that encodes z2 (so we can check the grid's orientation)."""
    value = ((z[:, 1] + 3) / 6).clamp(0, 1)
    return value[:, None].expand(len(z), 784).clone()


class DensityPrior:
    dim = 2

    def sample(self, n, labels=None, generator=None):
        return torch.randn(n, 2, generator=generator)

    def log_density(self, points):
        return -0.5 * points.pow(2).sum(1)


class SamplesOnlyPrior(DensityPrior):
    def log_density(self, points):
        raise NotImplementedError


# -----------------------------------------------------------------------------
# helpers and style


def test_to_numpy_accepts_tensors_with_grad_and_arrays():
    x = torch.ones(3, 2, dtype=torch.float64, requires_grad=True)
    out = plots._to_numpy(x * 2)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (3, 2)
    assert plots._to_numpy([[1, 2]]).dtype == np.float32


@pytest.mark.parametrize("shape", [(784,), (28, 28), (1, 28, 28)])
def test_image_shapes_accepted(shape):
    assert plots._as_images(images(4, shape)).shape == (4, 28, 28)


def test_set_style_and_digit_colors():
    plots.set_style()
    assert len(plots.DIGIT_COLORS) == 10 and len(set(plots.DIGIT_COLORS)) == 10
    assert 90 <= matplotlib.rcParams["figure.dpi"] <= 120


# -----------------------------------------------------------------------------
# image grids


def test_image_grid_one_axis_per_image_with_labels():
    labels = torch.arange(20) % 10
    fig = plots.image_grid(images(20), labels=labels, ncols=10, title="digits", label_prefix="y=")
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 20
    assert [ax.get_title() for ax in fig.axes] == [f"y={i % 10}" for i in range(20)]
    assert all(len(ax.images) == 1 and ax.images[0].get_array().shape == (28, 28) for ax in fig.axes)
    assert all(ax.get_xticks().size == 0 and ax.get_yticks().size == 0 for ax in fig.axes)
    assert "digits" in texts(fig)


def test_image_grid_partial_last_row_and_numpy_input():
    fig = plots.image_grid(images(13, (1, 28, 28)).numpy(), ncols=5)
    assert len(fig.axes) == 13
    assert all(ax.get_title() == "" for ax in fig.axes)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.rand(5, 100), r"\(n, 784\)"),
        (torch.rand(5, 3, 28, 28), "got shape"),
        (torch.rand(784), "got shape"),
        (torch.rand(5, 784) * 255, r"values in \[0, 1\]"),
        (torch.full((5, 784), float("nan")), "NaN"),
        (torch.rand(0, 784), "empty"),
    ],
)
def test_image_grid_rejects_bad_images(bad, message):
    with pytest.raises(ValueError, match=message):
        plots.image_grid(bad)


def test_compare_reconstructions_rows_and_names():
    originals = images(12)
    rows = {"AE": images(12, seed=1), "AAE": images(12, seed=2), "SAAE": images(12, seed=3)}
    fig = plots.compare_reconstructions(originals, rows, labels=torch.arange(12) % 10, n=10)
    assert len(fig.axes) == 4 * 10
    first_column = fig.axes[::10]
    assert [ax.get_ylabel() for ax in first_column] == ["original", "AE", "AAE", "SAAE"]
    assert [ax.get_title() for ax in fig.axes[:10]] == [str(i) for i in range(10)]
    assert all(ax.get_title() == "" for ax in fig.axes[10:])


def test_compare_reconstructions_rejects_short_rows():
    with pytest.raises(ValueError, match="AAE"):
        plots.compare_reconstructions(images(10), {"AAE": images(3)}, n=10)


# -----------------------------------------------------------------------------
# latent space


def test_latent_scatter_codes_over_prior_samples():
    codes, labels = torch.randn(300, 2), torch.arange(300) % 10
    fig = plots.latent_scatter(codes, labels, prior=SamplesOnlyPrior(), n_prior=500)
    ax = fig.axes[0]
    sizes = sorted(len(c.get_offsets()) for c in scatters(ax))
    assert sizes == [300, 500]  # codes and prior samples
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[:10] == [str(d) for d in range(10)] and "prior samples" in legend
    assert ax.get_aspect() == 1.0


def test_latent_scatter_prior_density_as_contour():
    fig = plots.latent_scatter(torch.randn(200, 2), torch.arange(200) % 10, prior=DensityPrior())
    ax = fig.axes[0]
    assert any(isinstance(c, ContourSet) for c in ax.collections)
    assert [len(c.get_offsets()) for c in scatters(ax)] == [200]  # only the codes are points


@pytest.mark.parametrize(
    "prior, drawn",
    [
        (GaussianPrior(), "prior density"),
        (MixtureOfGaussiansPrior(), "prior density"),
        (SwissRollPrior(), "prior samples"),
    ],
)
def test_latent_scatter_with_library_priors(prior, drawn):
    labels = torch.arange(100) % 10
    fig = plots.latent_scatter(prior.sample(100), labels, prior=prior, n_prior=200)
    assert drawn in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_latent_scatter_into_given_axis_and_subsamples():
    fig, (left, right) = plt.subplots(1, 2)
    out = plots.latent_scatter(np.random.randn(500, 2), np.arange(500) % 10, ax=right, title="AAE", max_points=100)
    assert out is fig
    assert [len(c.get_offsets()) for c in scatters(right)] == [100]
    assert right.get_title() == "AAE" and not left.collections


def test_latent_scatter_rejects_high_dimensional_codes():
    with pytest.raises(ValueError, match="needs 2-D codes; for higher dims project first"):
        plots.latent_scatter(torch.randn(50, 8), torch.zeros(50, dtype=torch.long))


def test_latent_scatter_rejects_bad_labels():
    with pytest.raises(ValueError, match="0..9"):
        plots.latent_scatter(torch.randn(5, 2), torch.tensor([0, 1, 2, 3, 12]))
    with pytest.raises(ValueError, match="one label per item"):
        plots.latent_scatter(torch.randn(5, 2), torch.tensor([0, 1]))


# -----------------------------------------------------------------------------
# decoded grids


def test_manifold_grid_decodes_an_n_by_n_grid():
    calls = []

    def decode(z, labels=None):
        calls.append((z, labels))
        return constant_decode(z)

    fig = plots.manifold_grid(decode, extent=3.0, n=7)
    ((z, labels),) = calls
    assert z.shape == (49, 2) and z.dtype == torch.float32 and z.device.type == "cpu" and labels is None
    assert torch.allclose(z.min(0).values, torch.tensor([-3.0, -3.0]))
    assert torch.allclose(z.max(0).values, torch.tensor([3.0, 3.0]))
    picture = fig.axes[0].images[0].get_array()
    assert picture.shape == (28 * 7, 28 * 7)
    # top row shows the highest z2 (brightest under constant_decode), bottom row the lowest
    assert picture[0, 0] == pytest.approx(1.0) and picture[-1, 0] == pytest.approx(0.0)
    assert len(fig.axes[0].get_xticks()) >= 3 and fig.axes[0].get_xticklabels()[0].get_text() == "-3"


def test_manifold_grid_passes_labels():
    seen = []

    def decode(z, labels):
        seen.append(labels)
        return constant_decode(z)

    plots.manifold_grid(decode, n=4, labels=3)
    assert seen[0].tolist() == [3] * 16
    with pytest.raises(ValueError, match="one per cell"):
        plots.manifold_grid(decode, n=4, labels=[1, 2])


def test_manifold_grid_rejects_bad_decoder_output():
    with pytest.raises(ValueError, match="decode"):
        plots.manifold_grid(lambda z: torch.rand(len(z), 10), n=3)


def test_style_content_grid_rows_are_styles_columns_are_digits():
    calls = []

    def decode(z, labels):
        calls.append((z, labels))
        return constant_decode(z)

    z = torch.tensor([[0.5, -1.0], [2.0, 0.0], [0.0, 0.0]])
    fig = plots.style_content_grid(decode, z, title="style vs content")
    ((z_seen, labels_seen),) = calls
    assert z_seen.shape == (30, 2) and torch.equal(z_seen[:10], z[0].expand(10, 2))
    assert labels_seen.tolist() == list(range(10)) * 3
    assert len(fig.axes) == 30
    assert [ax.get_title() for ax in fig.axes[:10]] == [str(d) for d in range(10)]
    assert fig.axes[0].get_ylabel() == "z=(0.5, -1.0)" and fig.axes[10].get_ylabel() == "z=(2.0, 0.0)"


def test_style_content_grid_rejects_flat_z():
    with pytest.raises(ValueError, match=r"\(r, d\)"):
        plots.style_content_grid(constant_decode, torch.zeros(2))


# -----------------------------------------------------------------------------
# loss curves

HISTORY = [
    {"epoch": e, "reconstruction": 0.2 / e, "discriminator": 1.3, "generator": 0.7, "seconds": 12.0}
    for e in range(1, 6)
]


def test_loss_curves_one_axis_per_numeric_key():
    fig = plots.loss_curves(HISTORY, title="AAE training")
    assert [ax.get_title() for ax in fig.axes] == ["reconstruction", "discriminator", "generator"]
    x, y = fig.axes[0].lines[0].get_data()
    assert list(x) == [1, 2, 3, 4, 5] and y[0] == pytest.approx(0.2)


def test_loss_curves_chosen_keys_and_missing_values():
    history = HISTORY + [{"epoch": 6, "reconstruction": 0.01, "accuracy": 0.9}]
    fig = plots.loss_curves(history, keys=["generator", "accuracy"])
    assert [ax.get_title() for ax in fig.axes] == ["generator", "accuracy"]
    assert np.isnan(fig.axes[0].lines[0].get_data()[1][-1])


def test_loss_curves_bad_input():
    with pytest.raises(ValueError, match="empty history"):
        plots.loss_curves([])
    with pytest.raises(ValueError, match="not in the history"):
        plots.loss_curves(HISTORY, keys=["accuracy"])
    with pytest.raises(ValueError, match="at least one key"):
        plots.loss_curves(HISTORY, keys=[])
    with pytest.raises(ValueError, match="no numeric keys"):
        plots.loss_curves([{"epoch": 1, "seconds": 3.0}])


# -----------------------------------------------------------------------------
# smoke runs are labelled


def test_every_figure_carries_the_smoke_note(monkeypatch):
    monkeypatch.setenv("SAAE_FAST", "1")
    note = settings.smoke_note()
    assert note
    figures = [
        plots.image_grid(images(5)),
        plots.compare_reconstructions(images(5), {"AE": images(5)}),
        plots.latent_scatter(torch.randn(50, 2), torch.arange(50) % 10, prior=DensityPrior()),
        plots.manifold_grid(constant_decode, n=3),
        plots.style_content_grid(constant_decode, torch.zeros(2, 2)),
        plots.loss_curves(HISTORY),
    ]
    for fig in figures:
        assert note in texts(fig)
        assert any(t.get_text() == note and t.get_color() == "red" for t in fig.findobj(Text))


def test_real_run_has_no_smoke_note():
    fig = plots.image_grid(images(5))
    assert not any("SMOKE" in t for t in texts(fig))


def test_score_histograms_one_panel_per_score():
    rng = np.random.default_rng(0)
    is_anomaly = np.arange(100) >= 10
    fig = plots.score_histograms({"a": rng.random(100), "b": rng.random(100) * 1e6}, is_anomaly, title="t")
    assert len(fig.axes) == 2 and fig.axes[1].get_title() == "b"
    assert len(fig.axes[0].patches) == 2 * 60  # two histograms of 60 bins
    with pytest.raises(ValueError, match="both normal images and anomalies"):
        plots.score_histograms({"a": rng.random(5)}, np.ones(5, bool))
    with pytest.raises(ValueError, match="has shape"):
        plots.score_histograms({"a": rng.random(7)}, is_anomaly)


def test_bit_balance_bars_are_the_share_of_set_bits():
    bits = np.array([[1, 0, 1], [1, 0, 0]], dtype=bool)
    fig = plots.bit_balance({"code": bits})
    assert [p.get_height() for p in fig.axes[0].patches] == [1.0, 0.0, 0.5]
    with pytest.raises(ValueError, match="must be"):
        plots.bit_balance({"code": np.ones(3, bool)})
