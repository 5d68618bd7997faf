"""Denoising: corruptions of clean digits, the classical filters that undo them, and the numbers that say how well.

Corruptions work on torch tensors of images in [0, 1] ((n, 784), (n, 28, 28) or (n, 1, 28, 28); the result has the
input's shape) and draw every random number from an explicit torch.Generator, so a noisy test set is the same on
every run. The filters (SciPy) and the measures (scikit-image) work on numpy copies: filters return a tensor like
their input, measures a float.
"""

import numpy as np
import torch
from scipy import ndimage
from skimage.metrics import structural_similarity

from .data import check_images
from .features import as_array

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


def masked_block(x: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Each image with one size x size square, at a uniformly random place that fits inside the image, set to 0."""
    if not 1 <= size <= SIDE:
        raise ValueError(f"size must be between 1 and {SIDE}, got {size}")
    flat = check_pixels(x)
    n = len(flat)
    top, left = torch.randint(SIDE - size + 1, (2, n, 1, 1), generator=generator, device=flat.device)  # n, 1, 1 each
    rows = torch.arange(SIDE, device=flat.device).view(1, SIDE, 1)
    columns = torch.arange(SIDE, device=flat.device).view(1, 1, SIDE)
    inside = (rows >= top) & (rows < top + size) & (columns >= left) & (columns < left + size)  # n, 28, 28
    return flat.reshape(n, SIDE, SIDE).masked_fill(inside, 0).reshape(x.shape)


CORRUPTIONS = {"gaussian": gaussian_noise, "salt_and_pepper": salt_and_pepper, "masked_block": masked_block}


def corrupt(x: torch.Tensor, kind: str, level, generator: torch.Generator) -> torch.Tensor:
    """A corruption by name: 'gaussian' (level = std), 'salt_and_pepper' (level = fraction) or 'masked_block'
    (level = the square's side)."""
    if kind not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {kind!r}: choose one of {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[kind](x, level, generator)


def as_image_stack(images) -> np.ndarray:
    """images (a tensor or array of 784-pixel rows or 28 x 28 images) as a float64 (n, 28, 28) array."""
    array = as_array(images, np.float64)
    if array.ndim < 2 or array[0].size != SIDE * SIDE or array.size != len(array) * SIDE * SIDE:
        raise ValueError(f"expected MNIST images of shape (n, 784), (n, 28, 28) or (n, 1, 28, 28), got {array.shape}")
    return array.reshape(len(array), SIDE, SIDE)


def like(filtered: np.ndarray, images):
    """filtered (n, 28, 28) in the type, shape, dtype and device of `images`."""
    if torch.is_tensor(images):
        return torch.from_numpy(filtered).to(images.dtype).to(images.device).reshape(images.shape)
    return filtered.astype(np.asarray(images).dtype, copy=False).reshape(np.shape(images))


def median_filter(images, size: int = 3):
    """Each pixel replaced by the median of the size x size window around it, in each image alone (SciPy's
    ndimage.median_filter with a window of extent 1 along the batch; the border is reflected)."""
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    stack = as_image_stack(images)
    return like(ndimage.median_filter(stack, size=(1, size, size), mode="reflect"), images)


def gaussian_filter(images, sigma: float, truncate: float = 4.0):
    """Each image convolved with a Gaussian of standard deviation sigma pixels, cut off at truncate * sigma
    (SciPy's ndimage.gaussian_filter; sigma 0 along the batch, so no image bleeds into the next; reflected border)."""
    if sigma <= 0:
        raise ValueError(f"sigma must be > 0, got {sigma}")
    stack = as_image_stack(images)
    return like(ndimage.gaussian_filter(stack, sigma=(0, sigma, sigma), truncate=truncate, mode="reflect"), images)


def check_pair(clean, restored) -> tuple[np.ndarray, np.ndarray]:
    clean, restored = as_image_stack(clean), as_image_stack(restored)
    if clean.shape != restored.shape:
        raise ValueError(f"clean {clean.shape} and restored {restored.shape} images differ in number")
    if len(clean) == 0:
        raise ValueError("no images to compare")
    return clean, restored


def psnr_per_image(clean, restored) -> np.ndarray:
    """PSNR_i = 10 log10(1 / MSE_i) dB with MSE_i the mean squared pixel error of image i (data range 1, as
    scikit-image's peak_signal_noise_ratio with data_range=1); an exact restoration scores +inf."""
    clean, restored = check_pair(clean, restored)
    mse = ((clean - restored) ** 2).mean(axis=(1, 2))  # n
    with np.errstate(divide="ignore"):
        return 10 * np.log10(1.0 / mse)


def psnr(clean, restored) -> float:
    """The mean over images of the per-image PSNR (psnr_per_image), in dB: higher is better."""
    return float(psnr_per_image(clean, restored).mean())


def ssim(clean, restored) -> float:
    """The mean over images of scikit-image's structural_similarity (data_range=1, its defaults otherwise: a 7 x 7
    uniform window), in [-1, 1]: 1 for identical images."""
    clean, restored = check_pair(clean, restored)
    return float(np.mean([structural_similarity(c, r, data_range=1.0) for c, r in zip(clean, restored, strict=True)]))
