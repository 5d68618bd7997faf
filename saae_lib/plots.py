"""Figures for the book: digit grids, reconstructions, 2-D latent spaces, decoded manifolds, loss curves.

Every function returns a matplotlib Figure and never calls plt.show(), so notebooks can display it and scripts can
save it. Inputs may be torch tensors or numpy arrays. In a smoke run (SAAE_FAST=1) each figure carries a red note
saying so, so that a figure from a tiny test run can never pass for a real result.
"""

import math

import matplotlib as mpl
import matplotlib.pyplot as plt
import numpy as np
import seaborn as sns
import torch
from cycler import cycler
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from saae_lib.settings import smoke_note

# One colour per digit, shared by every figure, so "3" is the same colour in every chapter.
DIGIT_COLORS = sns.color_palette("tab10", 10)
# Curves (losses, accuracies) use a different palette so they are not mistaken for digit classes.
CURVE_COLORS = sns.color_palette("deep", 10)
PRIOR_COLOR = "0.6"  # light gray: reference lines stay in the background
PRIOR_LINE_COLOR = "0.15"  # its outline, drawn over the codes
PRIOR_OUTLINE_LEVELS = [0.05, 0.5]  # density relative to its peak: the outline of the prior's bulk and of its core
SMOKE_COLOR = "red"
IMAGE_SIDE = 28  # MNIST

_RC = {
    "figure.dpi": 100,
    "savefig.dpi": 110,
    "savefig.bbox": "tight",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.title_fontsize": 9,
    "figure.titlesize": 12,
    "image.cmap": "gray",
    "image.interpolation": "nearest",  # show pixels as pixels, no smoothing
    "axes.prop_cycle": cycler(color=CURVE_COLORS),
}


def _style_rc() -> dict:
    """The book's rcParams: seaborn's whitegrid look with our sizes and palette on top."""
    return {**sns.axes_style("whitegrid"), **sns.plotting_context("notebook"), **_RC}


def set_style() -> None:
    """Apply the book's style globally (figures from this module use it whether or not this is called)."""
    mpl.rcParams.update(_style_rc())


# -----------------------------------------------------------------------------
# input checking


def _to_numpy(x) -> np.ndarray:
    """A float32 numpy copy of a tensor (any device, with or without grad) or array-like."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().float().numpy()
    return np.asarray(x, dtype=np.float32)


def _as_images(images, name="images") -> np.ndarray:
    """Validate a batch of MNIST images and return it as an (n, 28, 28) float array."""
    array = _to_numpy(images)
    side = IMAGE_SIDE
    expected = f"{name} must have shape (n, 784), (n, 28, 28) or (n, 1, 28, 28) with values in [0, 1]"
    good_shape = (
        (array.ndim == 2 and array.shape[1] == side * side)
        or (array.ndim == 3 and array.shape[1:] == (side, side))
        or (array.ndim == 4 and array.shape[1:] == (1, side, side))
    )
    if not good_shape:
        raise ValueError(f"{expected}; got shape {tuple(array.shape)}")
    if len(array) == 0:
        raise ValueError(f"{name} is empty: nothing to plot")
    if not np.isfinite(array).all():
        raise ValueError(f"{expected}; got NaN or infinite values")
    # a little slack for float round-off (e.g. a sigmoid that returns 1.0000001)
    low, high = float(array.min()), float(array.max())
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(f"{expected}; got values in [{low:.3g}, {high:.3g}] (undo any normalisation first)")
    return array.reshape(-1, side, side).clip(0, 1)


def _as_labels(labels, n, name="labels") -> np.ndarray | None:
    """Validate integer labels for n items (None stays None)."""
    if labels is None:
        return None
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.ndim != 1 or len(array) < n:
        raise ValueError(f"{name} must be a 1-D sequence with one label per item ({n}); got shape {array.shape}")
    return array[:n]


def _as_digits(labels, n) -> np.ndarray | None:
    """Labels that pick a colour from DIGIT_COLORS: integers 0..9."""
    array = _as_labels(labels, n)
    if array is None:
        return None
    if not np.issubdtype(array.dtype, np.integer) or (len(array) and (array.min() < 0 or array.max() > 9)):
        raise ValueError(f"labels must be integer digits 0..9; got {array.dtype} values {np.unique(array)[:12]}")
    return array


# -----------------------------------------------------------------------------
# shared figure pieces


def _finish(fig, title=None):
    """Add the figure title and, in a smoke run, the red smoke-run warning."""
    if title:
        fig.suptitle(title)
    note = smoke_note()
    if note:
        # supxlabel sits at the bottom and the constrained layout makes room for it; setting it again replaces it
        fig.supxlabel(note, color=SMOKE_COLOR, fontweight="bold", fontsize=10)
    plt.close(fig)  # detach from pyplot, so a notebook shows the figure once (as the cell's value), not twice
    return fig


def _clean_image_axis(ax):
    """No ticks, grid or frame around a digit, but keep the y-label usable for row names."""
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _image_axes(nrows, ncols, cell=0.75, header=0.0, left=0.0):
    """A constrained-layout grid of image axes: `cell` inches per digit, plus room for titles and row names.

    Sizing the figure to the content keeps the gaps between rows as narrow as those between columns.
    """
    width, height = ncols * cell + left + 0.2, nrows * cell + header + 0.1 + 0.25 * bool(smoke_note())
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False, layout="constrained")
    # tight but not touching: digits should read as separate images
    fig.get_layout_engine().set(w_pad=0.01, h_pad=0.01, wspace=0.02, hspace=0.02)
    return fig, axes


def _show_digit(ax, image):
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    _clean_image_axis(ax)


# -----------------------------------------------------------------------------
# image grids


def image_grid(images, labels=None, ncols=10, title=None, label_prefix=""):
    """A grid of digits, `ncols` per row, each with its label (prefixed by `label_prefix`) above it if given."""
    images = _as_images(images)
    labels = _as_labels(labels, len(images))
    if ncols < 1:
        raise ValueError(f"ncols must be >= 1, got {ncols}")
    n = len(images)
    ncols = min(ncols, n)
    nrows = math.ceil(n / ncols)
    with plt.rc_context(_style_rc()):
        fig, axes = _image_axes(nrows, ncols, header=0.17 * nrows * (labels is not None) + 0.3 * bool(title))
        for i, ax in enumerate(axes.flat):
            if i >= n:
                fig.delaxes(ax)  # only image axes remain, so len(fig.axes) == number of images
                continue
            _show_digit(ax, images[i])
            if labels is not None:
                ax.set_title(f"{label_prefix}{labels[i]}", fontsize=8, pad=2)
        return _finish(fig, title)


def compare_reconstructions(originals, rows, labels=None, n=10, title=None):
    """Originals in the first row, then one row of reconstructions per model: rows = {"AE": images, ...}."""
    originals = _as_images(originals, "originals")
    n = min(n, len(originals))
    recons = {}
    for name, images in rows.items():
        images = _as_images(images, f"rows[{name!r}]")
        if len(images) < n:
            raise ValueError(f"rows[{name!r}] has {len(images)} images but {n} originals are shown")
        recons[name] = images[:n]
    labels = _as_labels(labels, n)
    with plt.rc_context(_style_rc()):
        header = 0.2 * (labels is not None) + 0.3 * bool(title)
        fig, axes = _image_axes(1 + len(recons), n, header=header, left=0.7)
        for row, (name, images) in enumerate([("original", originals[:n]), *recons.items()]):
            for col in range(n):
                _show_digit(axes[row, col], images[col])
            axes[row, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=10)
        if labels is not None:
            for col in range(n):
                axes[0, col].set_title(str(labels[col]), fontsize=8, pad=2)
        return _finish(fig, title)


# -----------------------------------------------------------------------------
# 2-D latent spaces


def _prior_log_density(prior, points):
    """log p(points) if the prior can compute it cheaply, else None (then we plot its samples instead)."""
    if not callable(getattr(prior, "log_density", None)) or getattr(prior, "has_density", True) is False:
        return None
    try:
        with torch.no_grad():
            return _to_numpy(prior.log_density(points))
    except NotImplementedError:
        return None


def _square_limits(points, margin=0.1):
    """Equal-length x and y ranges that cover the bulk (99%) of the points, so stray outliers don't shrink the plot."""
    low = np.percentile(points, 0.5, axis=0)
    high = np.percentile(points, 99.5, axis=0)
    center = (low + high) / 2
    half = max((high - low).max() / 2, 1e-3) * (1 + margin)
    return (center[0] - half, center[0] + half), (center[1] - half, center[1] + half)


def latent_scatter(codes, labels, prior=None, n_prior=5000, title=None, ax=None, max_points=10000):
    """Scatter 2-D codes coloured by digit, over the prior (its density if it has one, else its samples)."""
    codes = _to_numpy(codes)
    if codes.ndim != 2 or codes.shape[1] != 2:
        raise ValueError(f"latent_scatter needs 2-D codes; for higher dims project first (got shape {codes.shape})")
    if len(codes) == 0:
        raise ValueError("latent_scatter got no codes")
    labels = _as_digits(labels, len(codes))
    if len(codes) > max_points:
        # a fixed subsample keeps the figure light and identical between runs
        keep = np.random.default_rng(0).choice(len(codes), max_points, replace=False)
        codes = codes[keep]
        labels = None if labels is None else labels[keep]

    prior_points = None
    if prior is not None:
        prior_points = _to_numpy(prior.sample(n_prior, generator=torch.Generator().manual_seed(0)))
        if prior_points.ndim != 2 or prior_points.shape[1] != 2:
            raise ValueError(f"latent_scatter needs a 2-D prior; its samples have shape {prior_points.shape}")
    # the view covers both codes and prior, so a mismatch between them (the whole point of the plot) stays visible
    xlim, ylim = _square_limits(codes if prior_points is None else np.concatenate([codes, prior_points]))

    with plt.rc_context(_style_rc()):
        if ax is None:
            fig, ax = plt.subplots(figsize=(6.4, 4.8), layout="constrained")  # room for the legend
        fig = ax.figure
        prior_handle = None if prior is None else _draw_prior(ax, prior, prior_points, xlim, ylim)
        if labels is None:
            ax.scatter(codes[:, 0], codes[:, 1], s=4, color="0.2", alpha=0.6, linewidths=0, zorder=2)
            handles = [Line2D([], [], marker="o", ls="", color="0.2", label="codes")]
        else:
            colors = np.asarray(DIGIT_COLORS)[labels]
            ax.scatter(codes[:, 0], codes[:, 1], s=4, c=colors, alpha=0.6, linewidths=0, zorder=2)
            handles = [Line2D([], [], marker="o", ls="", color=DIGIT_COLORS[d], label=str(d)) for d in range(10)]
        ax.set(xlim=xlim, ylim=ylim, xlabel="$z_1$", ylabel="$z_2$")
        ax.set_aspect("equal", adjustable="box")  # equal units on both axes: distances in z are what matter
        if prior_handle is not None:
            handles.append(prior_handle)
        ax.legend(
            handles=handles,
            title="digit" if labels is not None else None,
            loc="upper left",
            bbox_to_anchor=(1.02, 1),
            borderaxespad=0,
            frameon=False,
            handletextpad=0.3,
        )
        if title:
            ax.set_title(title)
        return _finish(fig)


def _draw_prior(ax, prior, prior_points, xlim, ylim, resolution=200):
    """Draw the prior with the codes and return a legend handle for it: a light fill behind them and its outline on
    top (10,000 codes cover any shading beneath them, and the plot exists to compare the two)."""
    x = np.linspace(*xlim, resolution, dtype=np.float32)
    y = np.linspace(*ylim, resolution, dtype=np.float32)
    xx, yy = np.meshgrid(x, y)
    grid = torch.from_numpy(np.stack([xx.ravel(), yy.ravel()], axis=1))
    log_density = _prior_log_density(prior, grid)
    if log_density is None:  # a prior known by its samples only: small dots over the codes
        ax.scatter(prior_points[:, 0], prior_points[:, 1], s=1, color=PRIOR_LINE_COLOR, alpha=0.3, linewidths=0,
                   zorder=3)
        return Line2D([], [], marker="o", ls="", markersize=3, color=PRIOR_LINE_COLOR, label="prior samples")
    density = np.exp(log_density - log_density.max()).reshape(resolution, resolution)
    # levels relative to the peak; everything below the lowest level stays unfilled (white)
    levels = [0.01, 0.05, 0.2, 0.5, 1.0001]
    ax.contourf(xx, yy, density, levels=levels, cmap="Greys", alpha=0.35, zorder=0)
    ax.contour(xx, yy, density, levels=PRIOR_OUTLINE_LEVELS, colors=PRIOR_LINE_COLOR, linewidths=0.8, zorder=3)
    return Line2D([], [], color=PRIOR_LINE_COLOR, lw=0.8, label="prior density")


# -----------------------------------------------------------------------------
# decoded grids


def _decode(decode, z, labels=None) -> np.ndarray:
    """Run a decoder without gradients and return its output as validated (m, 28, 28) images."""
    with torch.no_grad():
        images = decode(z) if labels is None else decode(z, labels)
    images = _as_images(images, "decode(...) output")
    if len(images) != len(z):
        raise ValueError(f"decode returned {len(images)} images for {len(z)} codes")
    return images


def _montage(images, nrows, ncols) -> np.ndarray:
    """Tile (nrows*ncols, 28, 28) images row by row into one (28*nrows, 28*ncols) image."""
    side = images.shape[-1]
    return images.reshape(nrows, ncols, side, side).transpose(0, 2, 1, 3).reshape(nrows * side, ncols * side)


def manifold_grid(decode, extent=3.0, n=20, labels=None, title=None, ax=None):
    """Decode an n x n grid of codes over [-extent, extent]^2 into one image (top row = highest z2).

    decode(z) gets a float CPU tensor of shape (n*n, 2), row by row; it should move it to its model's device.
    labels: None, one digit for every cell (int), or one label per cell; then decode(z, labels) is called.
    """
    if n < 1 or extent <= 0:
        raise ValueError(f"manifold_grid needs n >= 1 and extent > 0, got n={n}, extent={extent}")
    z1 = torch.linspace(-extent, extent, n)
    z2 = torch.linspace(extent, -extent, n)  # image rows go down, z2 goes up
    rows, cols = torch.meshgrid(z2, z1, indexing="ij")
    z = torch.stack([cols.reshape(-1), rows.reshape(-1)], dim=1)  # (n*n, 2) as (z1, z2)
    if labels is not None:
        labels = torch.as_tensor(labels, dtype=torch.long)
        labels = labels.expand(n * n) if labels.ndim == 0 else labels
        if labels.shape != (n * n,):
            raise ValueError(
                f"labels must be one int or {n * n} labels (one per cell); got shape {tuple(labels.shape)}"
            )
    picture = _montage(_decode(decode, z, labels), n, n)

    with plt.rc_context(_style_rc()):
        if ax is None:
            fig, ax = plt.subplots(figsize=(6.4, 6.4), layout="constrained")
        fig = ax.figure
        ax.imshow(picture, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.grid(False)
        # ticks at round code values: pixel position of a value z, with cell centres at the decoded codes
        values = np.linspace(-extent, extent, 5)
        position = (values + extent) / (2 * extent) * (n - 1) * IMAGE_SIDE + (IMAGE_SIDE - 1) / 2
        ax.set_xticks(position, [f"{v:.3g}" for v in values])
        ax.set_yticks(position, [f"{v:.3g}" for v in values[::-1]])
        ax.set(xlabel="$z_1$", ylabel="$z_2$")
        if title:
            ax.set_title(title)
        return _finish(fig)


def style_content_grid(decode, z, n_classes=10, title=None):
    """One row per style code z[i], one column per digit: decode(z[i], digit) shows style and content separated."""
    z = z.detach() if isinstance(z, torch.Tensor) else torch.as_tensor(np.asarray(z, dtype=np.float32))
    if z.ndim != 2 or len(z) == 0:
        raise ValueError(f"style_content_grid needs z of shape (r, d), one style code per row; got {tuple(z.shape)}")
    if n_classes < 1:
        raise ValueError(f"n_classes must be >= 1, got {n_classes}")
    r = len(z)
    z_repeated = z.repeat_interleave(n_classes, dim=0)  # row i: z[i] n_classes times
    labels = torch.arange(n_classes, device=z.device).repeat(r)  # columns: 0, 1, ..., n_classes-1
    images = _decode(decode, z_repeated, labels)

    with plt.rc_context(_style_rc()):
        fig, axes = _image_axes(r, n_classes, header=0.25 + 0.3 * bool(title), left=1.0)
        for i in range(r):
            for digit in range(n_classes):
                _show_digit(axes[i, digit], images[i * n_classes + digit])
            code = z[i].cpu().tolist()
            name = "z=(" + ", ".join(f"{v:.1f}" for v in code) + ")" if len(code) <= 3 else f"style {i}"
            axes[i, 0].set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        for digit in range(n_classes):
            axes[0, digit].set_title(str(digit), fontsize=10, pad=3)
        return _finish(fig, title)


# -----------------------------------------------------------------------------
# training curves

_NOT_CURVES = {"epoch", "seconds"}


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.number)) and not isinstance(value, bool)


def loss_curves(history, keys=None, title=None, max_cols=4):
    """One small plot per logged quantity against epoch; history is a list of per-epoch dicts."""
    if not history:
        raise ValueError("loss_curves got an empty history: train for at least one epoch first")
    if not all(isinstance(row, dict) for row in history):
        raise ValueError("history must be a list of per-epoch dicts, e.g. [{'epoch': 1, 'reconstruction': 0.1}]")
    if keys is None:
        # every numeric key in first-seen order (keys vary between models and may appear late)
        keys = list(dict.fromkeys(k for row in history for k, v in row.items() if _is_number(v)))
        keys = [k for k in keys if k not in _NOT_CURVES]
        if not keys:
            raise ValueError(f"history has no numeric keys besides {sorted(_NOT_CURVES)}: nothing to plot")
    elif not keys:
        raise ValueError("loss_curves got keys=[]: name at least one key, or pass None for all of them")
    else:
        missing = [k for k in keys if not any(k in row for row in history)]
        if missing:
            available = sorted({k for row in history for k in row})
            raise ValueError(f"keys {missing} are not in the history; available: {available}")
    epochs = [row.get("epoch", i + 1) for i, row in enumerate(history)]

    ncols = min(len(keys), max_cols)
    nrows = math.ceil(len(keys) / ncols)
    with plt.rc_context(_style_rc()):
        fig, axes = plt.subplots(
            nrows,
            ncols,
            figsize=(3.0 * ncols + 0.4, 2.5 * nrows + 0.3 * bool(title)),
            squeeze=False,
            sharex=True,
            layout="constrained",
        )
        for i, ax in enumerate(axes.flat):
            if i >= len(keys):
                fig.delaxes(ax)
                continue
            values = [row[keys[i]] if _is_number(row.get(keys[i])) else np.nan for row in history]
            ax.plot(epochs, values, marker="o" if len(history) <= 30 else None, ms=3, color=CURVE_COLORS[i % 10])
            ax.set_title(keys[i])
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.xaxis.set_tick_params(labelbottom=True)  # sharex would hide them on upper rows
        return _finish(fig, title)


# -----------------------------------------------------------------------------
# chapter 5: anomaly scores and binary codes


def score_histograms(scores, is_anomaly, title=None, bins=60):
    """One panel per score (scores = {"name": (n,) values}): the histograms of the normal images' scores and of the
    anomalies', each normalised to area 1 (there are nine times as many anomalies), on a shared x range per panel
    from the 0.5th to the 99.5th percentile (a few extreme scores would squash the rest)."""
    is_anomaly = np.asarray(_to_numpy(is_anomaly), dtype=bool)
    if not scores:
        raise ValueError("score_histograms needs at least one score")
    if is_anomaly.all() or not is_anomaly.any():
        raise ValueError("score_histograms needs both normal images and anomalies")
    with plt.rc_context(_style_rc()):
        fig, axes = plt.subplots(1, len(scores), figsize=(3.3 * len(scores) + 0.3, 2.7 + 0.3 * bool(title)),
                                 squeeze=False, layout="constrained")
        for ax, (name, values) in zip(axes.flat, scores.items(), strict=True):
            values = np.asarray(_to_numpy(values), dtype=np.float64)
            if values.shape != is_anomaly.shape:
                raise ValueError(f"scores[{name!r}] has shape {values.shape}, is_anomaly {is_anomaly.shape}")
            edges = np.linspace(*np.percentile(values, [0.5, 99.5]), bins + 1)
            for mask, label, color in ((~is_anomaly, "normal", CURVE_COLORS[0]), (is_anomaly, "anomaly",
                                                                                  CURVE_COLORS[3])):
                ax.hist(np.clip(values[mask], edges[0], edges[-1]), bins=edges, density=True, alpha=0.55,
                        color=color, label=f"{label} ({int(mask.sum())})")
            ax.set_title(name)
            ax.set_yticks([])
        axes.flat[0].legend(fontsize=8)
        return _finish(fig, title)


def bit_balance(bits, title=None):
    """For each code (bits = {"name": (n, n_bits) bools}), the share of images with each bit set: bars at 1/2 mean
    every bit splits the images in half."""
    if not bits:
        raise ValueError("bit_balance needs at least one set of bits")
    with plt.rc_context(_style_rc()):
        fig, axes = plt.subplots(1, len(bits), figsize=(3.6 * len(bits) + 0.3, 2.5 + 0.3 * bool(title)),
                                 squeeze=False, sharey=True, layout="constrained")
        for ax, (name, values) in zip(axes.flat, bits.items(), strict=True):
            values = np.asarray(_to_numpy(values))
            if values.ndim != 2:
                raise ValueError(f"bits[{name!r}] must be (n, n_bits), got shape {values.shape}")
            share = values.astype(np.float64).mean(axis=0)
            ax.bar(np.arange(len(share)), share, color=CURVE_COLORS[0])
            ax.axhline(0.5, color=PRIOR_COLOR, lw=1, ls="--")
            ax.set_ylim(0, 1)
            ax.set_title(name)
            ax.set_xlabel("bit")
        axes.flat[0].set_ylabel("share of images with the bit set")
        return _finish(fig, title)
