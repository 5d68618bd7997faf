"""Denoising: the classical filters that undo corruptions of clean digits, and the numbers that say how well.

The corruptions themselves are in corruptions.py (re-exported here). The filters (SciPy) and the measures
(scikit-image) work on numpy copies: filters return a tensor like their input, measures a float.
"""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy import ndimage

from . import metrics
from .checkpoints import run_name, train_or_load
from .corruptions import CORRUPTIONS, SIDE, check_pixels, corrupt, gaussian_noise, masked_block, salt_and_pepper
from .features import as_array

__all__ = ["CORRUPTIONS", "SIDE", "check_pixels", "corrupt", "gaussian_noise", "masked_block", "salt_and_pepper",
           "median_filter", "gaussian_filter", "psnr", "psnr_per_image", "ssim", "ssim_per_image"]

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
    """The PSNR of a set of images, 10 log10(1 / MSE) dB with MSE the mean squared error over all their pixels: higher
    is better. (Not the mean of psnr_per_image: one image restored exactly, a zeroed square that fell on the black
    background, would make that mean infinite.)"""
    clean, restored = check_pair(clean, restored)
    mse = float(((clean - restored) ** 2).mean())
    return float("inf") if mse == 0 else float(10 * np.log10(1.0 / mse))


def ssim(clean, restored) -> float:
    """The mean over images of scikit-image's structural_similarity (data_range=1, its defaults otherwise: a 7 x 7
    uniform window), in [-1, 1]: 1 for identical images (ssim_per_image computes the same numbers for a stack)."""
    return float(ssim_per_image(clean, restored).mean())


SSIM_WINDOW = 7  # scikit-image's default win_size
SSIM_CHUNK = 64  # images per step: intermediate arrays of a few hundred KB (measured fastest)


def ssim_per_image(clean, restored) -> np.ndarray:
    """scikit-image's structural_similarity(c, r, data_range=1) of each pair, for a whole stack at once.

    With u_x the mean of x over a 7 x 7 window, v_x its sample variance and v_xy the sample covariance,

        SSIM = mean over windows of (2 u_x u_y + C1)(2 v_xy + C2) / ((u_x^2 + u_y^2 + C1)(v_x + v_y + C2)),

    C1 = 0.01^2, C2 = 0.03^2, over the windows that lie inside the image (scikit-image filters with a reflected
    border, then leaves out the 3 pixels that border touches: the same windows). scikit-image takes one pair per
    call, about 0.2 ms each; chapter 5 compares 360,000 pairs, so the windows' sums come from a summed-area table of
    a chunk of images here. A test holds the two equal to 1e-12."""
    clean, restored = check_pair(clean, restored)

    def chunk(start):
        return ssim_of_chunk(clean[start : start + SSIM_CHUNK], restored[start : start + SSIM_CHUNK])

    with ThreadPoolExecutor(max_workers=torch.get_num_threads()) as pool:  # numpy lets go of the GIL: one per core
        return np.concatenate(list(pool.map(chunk, range(0, len(clean), SSIM_CHUNK))))


def window_means(images: np.ndarray, size: int) -> np.ndarray:
    """The mean of every size x size window inside each image: (n, h - size + 1, w - size + 1), from the summed-area
    table S (S[i, j] = the sum of the pixels above and left of (i, j))."""
    table = np.pad(images, ((0, 0), (1, 0), (1, 0))).cumsum(axis=1).cumsum(axis=2)  # n, h + 1, w + 1
    sums = table[:, size:, size:] - table[:, :-size, size:] - table[:, size:, :-size] + table[:, :-size, :-size]
    return sums / size**2


def ssim_of_chunk(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    ux, uy, uxx, uyy, uxy = (window_means(a, SSIM_WINDOW) for a in (x, y, x * x, y * y, x * y))  # n, 22, 22
    sample = SSIM_WINDOW**2 / (SSIM_WINDOW**2 - 1)  # sample, not population, (co)variances: scikit-image's default
    vx, vy, vxy = sample * (uxx - ux * ux), sample * (uyy - uy * uy), sample * (uxy - ux * uy)
    c1, c2 = 0.01**2, 0.03**2  # (K1 R)^2 and (K2 R)^2 with data range R = 1
    similarity = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return similarity.mean(axis=(1, 2))


# -- the chapter's experiment: corrupted test sets, the best filter, two autoencoders ------------------------------
# The test conditions: three levels of each corruption, up to the largest the denoising model trains on.
LEVELS = {"gaussian": (0.3, 0.5, 0.7), "salt_and_pepper": (0.1, 0.2, 0.3), "masked_block": (8, 12, 16)}
# The classical filters; at each condition the one with the best PSNR on corrupted validation images is tested.
FILTERS = {
    "median 3x3": lambda images: median_filter(images, 3),
    "median 5x5": lambda images: median_filter(images, 5),
    "gaussian 0.5": lambda images: gaussian_filter(images, 0.5),
    "gaussian 1.0": lambda images: gaussian_filter(images, 1.0),
    "gaussian 1.5": lambda images: gaussian_filter(images, 1.5),
}
# Both autoencoders have the same size (a 32-D code: a 2-D one cannot redraw a digit's details) and training; only
# what they see differs: clean images (the plain autoencoder) or corrupted ones (the denoising autoencoder). 40 epochs:
# on validation (seed 0) the denoiser trained 20 epochs stayed 0.4 dB under the 3x3 median filter on light salt and
# pepper (20.2 against 20.6 dB) and 40 epochs put it 0.3 dB above (20.9), better on every corruption; a 64-D code
# trained 20 epochs gained less (20.4) (the results page's applications table, "what was tried").
AUTOENCODER_OPTIONS = dict(latent_dim=32, hidden=(512, 512), epochs=40)
DENOISERS = {"autoencoder": "ae", "denoising autoencoder": "dae"}
NOISE_SEEDS = {"validation": 1, "test": 2}  # one fixed corruption of each split, whatever the models' seed


def condition_name(kind: str, level) -> str:
    return f"{kind} {level:g}"


def conditions() -> list[tuple[str, float]]:
    return [(kind, level) for kind, levels in LEVELS.items() for level in levels]


def corrupted_split(images: torch.Tensor, split: str) -> dict[str, torch.Tensor]:
    """{condition: corrupted images} for every test condition, each drawn from its own fixed generator (the same
    corrupted images on every run and for every model)."""
    result = {}
    for index, (kind, level) in enumerate(conditions()):
        generator = torch.Generator(images.device).manual_seed(1000 * NOISE_SEEDS[split] + index)
        result[condition_name(kind, level)] = corrupt(images, kind, level, generator)
    return result


def train_denoisers(data, *, seed: int = 0, progress=None, **options) -> dict:
    """{"autoencoder": trainer, "denoising autoencoder": trainer}: AUTOENCODER_OPTIONS (and `options`), trained or
    loaded from runs/dae_32 and runs/ae_32 (with _seedK for other seeds)."""
    return {name: train_or_load(run_name(f"{model}_32", seed), data=data, model=model, seed=seed, progress=progress,
                                **{**AUTOENCODER_OPTIONS, **options})
            for name, model in DENOISERS.items()}


def best_filters(clean_val: torch.Tensor, noisy_val: dict) -> dict[str, str]:
    """{condition: the name of the FILTERS entry with the highest PSNR on the corrupted validation images}."""
    return {condition: max(FILTERS, key=lambda name: psnr(clean_val, FILTERS[name](noisy)))
            for condition, noisy in noisy_val.items()}


def denoising_results(models: dict, data, filters: dict[str, str] | None = None) -> dict[str, dict]:
    """{condition: {method: {"psnr": dB, "ssim": ...}}} on every test image, for the corrupted input itself, the
    best classical filter (chosen on validation: its name under "filter") and each model's reconstruction of the
    corrupted input (models: name -> model). filters: the choice best_filters made on the validation images, if it
    was made already (it is the same every time: the corruptions are fixed)."""
    chosen = filters or best_filters(data.val_images, corrupted_split(data.val_images, "validation"))
    if set(chosen) != {condition_name(kind, level) for kind, level in conditions()} or not set(
            chosen.values()) <= set(FILTERS):
        raise ValueError("filters must name one of denoising.FILTERS for every condition: pass what best_filters "
                         "returns")
    results = {}
    for condition, noisy in corrupted_split(data.test_images, "test").items():
        restored = {"corrupted input": noisy, "best filter": FILTERS[chosen[condition]](noisy)}
        for name, model in models.items():
            restored[name] = metrics.reconstruct(model, noisy)
        results[condition] = {name: {"psnr": psnr(data.test_images, images), "ssim": ssim(data.test_images, images)}
                              for name, images in restored.items()}
        results[condition]["filter"] = chosen[condition]
    return results
