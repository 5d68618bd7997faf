"""MNIST as resident tensors: verified loading, seeded splits, and a batch iterator without a DataLoader.

The whole data set is 60,000 + 10,000 images of 784 bytes, so it lives on the training device and a batch
is one indexing operation. That is most of the speed-up over the usual Dataset + DataLoader pipeline.
"""

import gzip
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import settings

# The official files (torchvision's names and layout: ROOT/MNIST/raw/NAME) and their MD5 sums.
MNIST_FILES = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
N_CLASSES = 10
IMAGE_PIXELS = 28 * 28
TRAIN_IMAGES = 60_000  # the official training set, before the validation split

# Smoke mode keeps this many images of each split.
FAST_SIZES = {"train": 3000, "validation": 500, "test": 1000}


class DataError(RuntimeError):
    """The MNIST files are missing or damaged; the message says what to do."""


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where MNIST lives: the `root` argument, else $SAAE_DATA_DIR, else the cache folder."""
    if root is not None:
        return Path(root).expanduser()
    if os.environ.get("SAAE_DATA_DIR"):
        return Path(os.environ["SAAE_DATA_DIR"]).expanduser()
    return settings.cache_dir() / "data"


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """The hex digest of a file (hashlib's `algorithm`), read a MiB at a time."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def ensure_mnist_files(root: str | os.PathLike | None = None, download: bool = True) -> Path:
    """Return ROOT/MNIST/raw with the four verified .gz files, downloading them first if they are missing."""
    root = data_root(root)
    check_not_too_deep(root)
    raw = root / "MNIST" / "raw"
    missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing and download:
        _download(raw.parent.parent, missing)
        missing = [name for name in MNIST_FILES if not (raw / name).is_file()]
    if missing:
        raise DataError(
            f"MNIST files missing in {raw}: {', '.join(missing)}. Put the four official files "
            f"({', '.join(MNIST_FILES)}) there, or point SAAE_DATA_DIR (or root=) at a folder holding MNIST/raw/."
        )
    for name, expected in MNIST_FILES.items():
        actual = file_digest(raw / name, "md5")
        if actual != expected:
            raise DataError(
                f"{raw / name} is damaged: MD5 {actual}, expected {expected}. "
                "Delete it and download it again (or copy the official file there)."
            )
    return raw


def check_not_too_deep(root: Path) -> None:
    """Refuse a data folder that is MNIST/raw (or MNIST/) itself instead of the folder holding it, before anything
    is created in it: the files would be looked for, and downloaded to, ROOT/MNIST/raw/MNIST/raw."""
    raw = root / "MNIST" / "raw"
    if raw.is_dir():
        return
    for inner in (root, root / "raw"):
        if any((inner / name).is_file() for name in MNIST_FILES):
            if inner.name == "raw" and inner.parent.name == "MNIST":
                hint = f"point SAAE_DATA_DIR (or root=) at {inner.parent.parent}, the folder that holds MNIST/raw/"
            else:
                hint = f"move the files into {raw}, or point SAAE_DATA_DIR at a folder that holds MNIST/raw/"
            raise DataError(f"{root} holds MNIST files itself, but the data folder must hold MNIST/raw/: {hint}")


def _download(root: Path, missing: list[str]) -> None:
    try:
        # Imported here, where a download needs it: importing torchvision adds one to two seconds to every start.
        from torchvision.datasets import MNIST as TorchvisionMNIST

        TorchvisionMNIST(str(root), train=True, download=True)
        TorchvisionMNIST(str(root), train=False, download=True)
    except Exception as error:  # offline, read-only folder, mirror down: all end in the same advice
        raise DataError(
            f"could not download MNIST into {root / 'MNIST' / 'raw'} ({error}). Missing: {', '.join(missing)}. "
            "Download the four .gz files by hand, put them in that folder, or set SAAE_DATA_DIR to a folder "
            "that holds MNIST/raw/."
        ) from error


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    """Parse an IDX file (big-endian header, then uint8 data) straight from its .gz."""
    with gzip.open(path, "rb") as file:
        data = file.read()
    magic = int.from_bytes(data[0:4], "big")
    if magic != expected_magic:
        raise DataError(f"{path} is not an MNIST IDX file (magic {magic}, expected {expected_magic})")
    n_dims = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(n_dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * n_dims).reshape(shape)


def read_split(raw: Path, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 (n, 28, 28) and labels as int64 (n,) from the verified files."""
    prefix = "train" if train else "t10k"
    images = _read_idx(raw / f"{prefix}-images-idx3-ubyte.gz", 2051)
    labels = _read_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", 2049)
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


@dataclass
class MNIST:
    """Float images in [0, 1] flattened to 784, int64 labels, all on `device`."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    device: torch.device
    validation_size: int | None = None  # what load_mnist was asked to hold out (None: built by hand)

    def to(self, device: str | torch.device) -> "MNIST":
        device = torch.device(device)
        tensors = {name: getattr(self, name).to(device) for name in self.__dataclass_fields__
                   if name not in {"device", "validation_size"}}
        return MNIST(**tensors, device=device, validation_size=self.validation_size)

    def __repr__(self) -> str:
        sizes = f"train={len(self.train_images)}, validation={len(self.val_images)}, test={len(self.test_images)}"
        return f"MNIST({sizes}, device={self.device})"


def load_mnist(
    root: str | os.PathLike | None = None,
    device: str | torch.device | None = None,
    validation_size: int = 5000,
    seed: int = 0,
    download: bool = True,
    smoke: bool | None = None,
) -> MNIST:
    """Load MNIST with a seeded validation split held out of the 60k training images.

    The 10k test set is kept apart: nothing in this library trains or selects models on it. smoke (default:
    settings.smoke_mode()) keeps a seeded random FAST_SIZES of each split.
    """
    smoke = settings.smoke_mode() if smoke is None else smoke
    raw = ensure_mnist_files(root, download=download)
    train_x, train_y = read_split(raw, train=True)
    test_x, test_y = read_split(raw, train=False)
    if not 0 <= validation_size < len(train_x):
        raise ValueError(f"validation_size must be in [0, {len(train_x)}), got {validation_size}")
    order = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:validation_size], order[validation_size:]
    if smoke:  # random subsets: `order` is random already; the test set's own order is not (its first half is cleaner)
        train_idx = train_idx[: FAST_SIZES["train"]]
        val_idx = val_idx[: FAST_SIZES["validation"]]
        test_idx = torch.randperm(len(test_x), generator=torch.Generator().manual_seed(0))[: FAST_SIZES["test"]]
        test_x, test_y = test_x[test_idx], test_y[test_idx]  # one fixed subset: the test set never follows `seed`
    device = settings.pick_device(None if device is None else str(device))

    def as_float(images: torch.Tensor) -> torch.Tensor:
        return (images.reshape(len(images), IMAGE_PIXELS).float() / 255.0).to(device)

    return MNIST(
        train_images=as_float(train_x[train_idx]),
        train_labels=train_y[train_idx].to(device),
        val_images=as_float(train_x[val_idx]),
        val_labels=train_y[val_idx].to(device),
        test_images=as_float(test_x),
        test_labels=test_y.to(device),
        device=device,
        validation_size=validation_size,
    )


def labeled_subset(labels: torch.Tensor, n_labels: int, seed: int = 0, n_classes: int = N_CLASSES) -> torch.Tensor:
    """Indices of a class-balanced subset: n_labels / n_classes random examples of each class."""
    if n_labels % n_classes:
        raise ValueError(f"n_labels must be a multiple of {n_classes} for a balanced subset, got {n_labels}")
    per_class = n_labels // n_classes
    generator = torch.Generator().manual_seed(seed)
    labels = labels.cpu()
    chosen = []
    for digit in range(n_classes):
        members = torch.nonzero(labels == digit).flatten()
        if len(members) < per_class:
            raise ValueError(f"only {len(members)} examples of digit {digit}, {per_class} needed")
        chosen.append(members[torch.randperm(len(members), generator=generator)[:per_class]])
    return torch.cat(chosen).sort().values


def batches(
    *tensors: torch.Tensor,
    batch_size: int,
    generator: torch.Generator | None = None,
    shuffle: bool = True,
    drop_last: bool = False,
):
    """Yield aligned mini-batches of resident tensors: one permutation per epoch, then plain indexing."""
    if not tensors:
        raise ValueError("batches() needs at least one tensor")
    n = len(tensors[0])
    if any(len(t) != n for t in tensors):
        raise ValueError(f"all tensors must have the same length, got {[len(t) for t in tensors]}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = tensors[0].device
    if shuffle:
        # Drawn where the data lives, from a generator on that device, so no index crosses to the host.
        order = torch.randperm(n, generator=generator, device=device)
    else:
        order = torch.arange(n, device=device)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        index = order[start : start + batch_size]
        yield tuple(t[index] for t in tensors) if len(tensors) > 1 else tensors[0][index]


def check_images(images: torch.Tensor) -> torch.Tensor:
    """Flatten images to (n, 784) floats in [0, 1], or explain what shape was expected."""
    if not torch.is_tensor(images):
        raise TypeError(f"expected a torch.Tensor of images, got {type(images).__name__}")
    if images.dim() >= 2 and images.shape[1:] in {(784,), (28, 28), (1, 28, 28)}:
        images = images.reshape(len(images), IMAGE_PIXELS)
    else:
        raise ValueError(
            f"expected MNIST images of shape (n, 784), (n, 28, 28) or (n, 1, 28, 28), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise ValueError(f"expected float images in [0, 1], got dtype {images.dtype}: divide uint8 images by 255")
    return images


def check_training_data(data: MNIST) -> None:
    """Refuse data a model would train on silently and wrongly: no training images, or pixels outside [0, 1] (uint8
    values 0..255 make the cross-entropy negative and the training meaningless)."""
    if len(data.train_images) == 0:
        raise ValueError("the data has no training images: nothing to train on")
    for name in ("train_images", "val_images", "test_images"):
        images = getattr(data, name)
        if not images.is_floating_point():
            raise ValueError(f"{name} are {images.dtype}: the models take float pixels in [0, 1] (divide uint8 "
                             "images by 255)")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError(f"{name} hold values from {float(images.min()):g} to {float(images.max()):g}: the "
                             "models take pixels in [0, 1] (divide 0..255 images by 255)")


def check_labels(labels: torch.Tensor, n_classes: int = N_CLASSES) -> torch.Tensor:
    if labels.dtype not in (torch.int64, torch.int32, torch.uint8):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(
            f"labels must be in 0..{n_classes - 1}, got values from {int(labels.min())} to {int(labels.max())}"
        )
    return labels.long()
