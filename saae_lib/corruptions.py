"""Corruptions of clean digits: what a denoising model learns to undo and is tested on.

Each works on torch tensors of images in [0, 1] ((n, 784), (n, 28, 28) or (n, 1, 28, 28); the result has the input's
shape) and draws every random number from an explicit torch.Generator, so a noisy test set is the same on every run.
`random_corruptions` is the training mixture of the denoising autoencoder (models.DenoisingAutoencoder): each image
gets one of the three kinds at a random level, so one model learns to undo all of them.
"""

import torch

from .data import check_images

SIDE = 28  # MNIST images are SIDE x SIDE


def check_pixels(x: torch.Tensor) -> torch.Tensor:
    """x flattened to (n, 784) floats (check_images), refusing pixels outside [0, 1]."""
    flat = check_images(x)
    if flat.numel() and (flat.min() < 0 or flat.max() > 1):
        raise ValueError(f"pixels must be in [0, 1], got {float(flat.min()):g} to {float(flat.max()):g}: divide "
                         "0..255 images by 255")
    return flat


def gaussian_noise(x: torch.Tensor, std: float, generator: torch.Generator) -> torch.Tensor:
    """x~ = clip(x + std * eps, 0, 1), eps ~ N(0, I): additive noise, clipped back to valid pixels."""
    if std < 0:
        raise ValueError(f"std must be >= 0, got {std}")
    flat = check_pixels(x)
    noise = torch.randn(flat.shape, generator=generator, device=flat.device, dtype=flat.dtype)  # n, 784
    return (flat + std * noise).clamp(0, 1).reshape(x.shape)


def salt_and_pepper(x: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """Exactly round(fraction * 784) pixels of each image, chosen at random, set to 1 (salt) or 0 (pepper) with
    probability 1/2 each; the other pixels are kept. (A pixel already at that value looks untouched.)"""
    if not 0 <= fraction <= 1:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    flat = check_pixels(x)
    n, pixels = flat.shape
    k = round(fraction * pixels)
    # The first k of a random permutation per image: k distinct pixels, the same number in every image.
    order = torch.rand(n, pixels, generator=generator, device=flat.device).argsort(dim=1)  # n, 784
    chosen = order[:, :k]  # n, k
    values = (torch.rand(n, k, generator=generator, device=flat.device) < 0.5).to(flat.dtype)  # n, k: salt or pepper
    return flat.scatter(1, chosen, values).reshape(x.shape)


def square_mask(top, left, size, device) -> torch.Tensor:
    """(n, 28, 28) bool: True inside each image's square of side `size` whose top-left pixel is (top, left); each of
    the three is a number or an (n, 1, 1) tensor, one per image."""
    rows = torch.arange(SIDE, device=device).view(1, SIDE, 1)
    columns = torch.arange(SIDE, device=device).view(1, 1, SIDE)
    return (rows >= top) & (rows < top + size) & (columns >= left) & (columns < left + size)


def masked_block(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Each image with one size x size square, at a uniformly random place that fits inside the image, set to 0."""
    if not 1 <= size <= SIDE:
        raise ValueError(f"size must be between 1 and {SIDE}, got {size}")
    flat = check_pixels(x)
    n = len(flat)
    top, left = torch.randint(SIDE - size + 1, (2, n, 1, 1), generator=generator, device=flat.device)  # n, 1, 1 each
    inside = square_mask(top, left, size, flat.device)  # n, 28, 28
    return flat.reshape(n, SIDE, SIDE).masked_fill(inside, 0).reshape(x.shape)


CORRUPTIONS = {"gaussian": gaussian_noise, "salt_and_pepper": salt_and_pepper, "masked_block": masked_block}


def corrupt(x: torch.Tensor, kind: str, level, generator: torch.Generator) -> torch.Tensor:
    """A corruption by name: 'gaussian' (level = std), 'salt_and_pepper' (level = fraction) or 'masked_block'
    (level = the square's side)."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}: choose one of {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[kind](x, level, generator)


def random_corruptions(x: torch.Tensor, generator: torch.Generator, *, max_std: float, max_fraction: float,
                       max_block: int) -> torch.Tensor:
    """Each image of x (n, 784) corrupted by one kind, drawn uniformly, at a level u * max drawn uniformly
    (u ~ U[0, 1)): Gaussian noise of std u * max_std (clipped), salt and pepper on each pixel with probability
    u * max_fraction (so about that fraction of pixels), or a zeroed square of side round(u * max_block).

    The same random numbers are drawn for every batch of a given shape (all three kinds are computed, one is kept
    per image), so the step it is part of can be replayed as a CUDA graph."""
    n = len(x)
    device, dtype = x.device, x.dtype
    kind = torch.randint(len(CORRUPTIONS), (n, 1), generator=generator, device=device)  # n, 1
    level = torch.rand(n, 1, generator=generator, device=device)  # n, 1: u, one per image
    gaussian = (x + level * max_std * torch.randn(x.shape, generator=generator, device=device)).clamp(0, 1)
    hit = torch.rand(x.shape, generator=generator, device=device) < level * max_fraction  # n, 784
    salt = (torch.rand(x.shape, generator=generator, device=device) < 0.5).to(dtype)  # n, 784
    speckled = torch.where(hit, salt, x)
    size = (level * max_block).round().view(n, 1, 1)  # n, 1, 1
    top, left = ((SIDE - size + 1) * torch.rand(2, n, 1, 1, generator=generator, device=device)).floor()
    inside = square_mask(top, left, size, device)  # n, 28, 28
    blocked = x.masked_fill(inside.view(n, -1), 0)
    return torch.where(kind == 0, gaussian, torch.where(kind == 1, speckled, blocked))  # n, 784
