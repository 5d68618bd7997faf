"""Tests for saae_lib.data and saae_lib.settings: verified loading, splits, subsets, batches, input checks, devices."""

import gzip
import os
import stat

import pytest
import torch

from saae_lib import data as sdata
from saae_lib import settings
from saae_lib.data import MNIST_FILES, DataError, batches, check_images, check_labels, labeled_subset, load_mnist

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"


def row_set(images: torch.Tensor) -> list[bytes]:
    """Each image as the bytes of its uint8 pixels: an exact key for comparing splits."""
    pixels = (images.cpu() * 255).round().to(torch.uint8).numpy()
    return [row.tobytes() for row in pixels]


@pytest.fixture(scope="module")
def full_mnist(mnist_root):
    """The real, full-size data set (about 2 s), loaded once for this module."""
    with pytest.MonkeyPatch.context() as patcher:
        patcher.setenv("SAAE_FAST", "0")
        return load_mnist(root=mnist_root, device="cpu", download=False)


# -- load_mnist ------------------------------------------------------------------------------------------------
def test_load_mnist_shapes_dtypes_and_ranges(full_mnist):
    d = full_mnist
    assert d.train_images.shape == (55000, 784)
    assert d.val_images.shape == (5000, 784)
    assert d.test_images.shape == (10000, 784)
    for images in (d.train_images, d.val_images, d.test_images):
        assert images.dtype == torch.float32
        assert float(images.min()) == 0.0 and float(images.max()) == 1.0
    for labels, n in ((d.train_labels, 55000), (d.val_labels, 5000), (d.test_labels, 10000)):
        assert labels.dtype == torch.int64 and labels.shape == (n,)
        assert set(labels.unique().tolist()) == set(range(10))
    assert d.device == torch.device("cpu")
    assert "train=55000" in repr(d)


def test_validation_split_is_a_partition_of_the_training_images(full_mnist, mnist_root):
    raw_images, raw_labels = sdata.read_split(mnist_root / "MNIST" / "raw", train=True)
    everything = sorted(row.tobytes() for row in raw_images.reshape(60000, 784).numpy())
    split = sorted(row_set(full_mnist.train_images) + row_set(full_mnist.val_images))
    assert split == everything  # train + validation hold every training image exactly once: disjoint, complete
    # labels travel with their images
    assert torch.equal(
        torch.bincount(torch.cat([full_mnist.train_labels, full_mnist.val_labels]), minlength=10),
        torch.bincount(raw_labels, minlength=10),
    )


def test_smoke_mode_shrinks_the_splits(fast, mnist_root):
    d = load_mnist(root=mnist_root, device="cpu", download=False)
    assert len(d.train_images) == sdata.FAST_SIZES["train"] == len(d.train_labels)
    assert len(d.val_images) == sdata.FAST_SIZES["validation"] == len(d.val_labels)
    assert len(d.test_images) == sdata.FAST_SIZES["test"] == len(d.test_labels) == 1000
    assert d.train_images.shape[1] == 784 and d.train_images.dtype == torch.float32


def test_split_is_seeded_and_disjoint(fast, mnist_root):
    a = load_mnist(root=mnist_root, device="cpu", seed=0, download=False)
    b = load_mnist(root=mnist_root, device="cpu", seed=0, download=False)
    c = load_mnist(root=mnist_root, device="cpu", seed=1, download=False)
    assert torch.equal(a.val_images, b.val_images) and torch.equal(a.train_labels, b.train_labels)
    assert not torch.equal(a.val_images, c.val_images)
    assert not set(row_set(a.train_images)) & set(row_set(a.val_images))
    # the test set never depends on the seed
    assert torch.equal(a.test_images, c.test_images)


def test_validation_size_is_checked(mnist_root):
    with pytest.raises(ValueError, match="validation_size"):
        load_mnist(root=mnist_root, device="cpu", validation_size=60000, download=False)


def test_root_argument_and_env_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("SAAE_DATA_DIR", str(tmp_path / "from_env"))
    assert sdata.data_root() == tmp_path / "from_env"
    assert sdata.data_root(tmp_path / "given") == tmp_path / "given"
    monkeypatch.delenv("SAAE_DATA_DIR")
    monkeypatch.setenv("SAAE_CACHE_DIR", str(tmp_path / "cache"))
    assert sdata.data_root() == tmp_path / "cache" / "data"


# -- damaged, missing and read-only files ----------------------------------------------------------------------
def test_corrupted_file_is_refused_with_advice(raw_copy):
    root, raw = raw_copy
    path = raw / TRAIN_IMAGES
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))
    with pytest.raises(DataError) as caught:
        load_mnist(root=root, device="cpu", download=False)
    message = str(caught.value)
    assert TRAIN_IMAGES in message
    assert MNIST_FILES[TRAIN_IMAGES] in message  # the expected MD5
    assert "download it again" in message.lower() or "delete" in message.lower()


def test_truncated_file_is_refused(raw_copy):
    root, raw = raw_copy
    path = raw / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        load_mnist(root=root, device="cpu", download=False)


def test_missing_files_say_where_to_put_them(raw_copy):
    root, raw = raw_copy
    (raw / TRAIN_IMAGES).unlink()
    with pytest.raises(DataError) as caught:
        load_mnist(root=root, device="cpu", download=False)
    message = str(caught.value)
    assert str(raw) in message
    assert TRAIN_IMAGES in message
    assert "SAAE_DATA_DIR" in message


def test_empty_folder_without_download_names_all_files(tmp_path):
    with pytest.raises(DataError) as caught:
        sdata.ensure_mnist_files(tmp_path, download=False)
    assert all(name in str(caught.value) for name in MNIST_FILES)


def test_read_only_data_folder_works(raw_copy):
    root, raw = raw_copy
    read_only = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
    try:
        for path in raw.iterdir():
            path.chmod(read_only)
        for folder in (raw, raw.parent):
            folder.chmod(read_only | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        before = sorted(os.listdir(raw))
        with pytest.MonkeyPatch.context() as patcher:
            patcher.setenv("SAAE_FAST", "1")
            d = load_mnist(root=root, device="cpu", download=False)
        assert len(d.test_images) == 1000
        assert sorted(os.listdir(raw)) == before  # nothing written next to the data
    finally:
        for folder in (raw.parent, raw):
            folder.chmod(0o755)


def test_wrong_magic_number_is_refused(tmp_path):
    path = tmp_path / "labels.gz"
    with gzip.open(path, "wb") as file:
        file.write((2049).to_bytes(4, "big") + (3).to_bytes(4, "big") + bytes([1, 2, 3]))
    assert sdata._read_idx(path, 2049).tolist() == [1, 2, 3]
    with pytest.raises(DataError, match="magic"):
        sdata._read_idx(path, 2051)


# -- labeled_subset ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def many_labels():
    return torch.arange(10).repeat(50)[torch.randperm(500, generator=torch.Generator().manual_seed(3))]


def test_labeled_subset_is_balanced(many_labels):
    index = labeled_subset(many_labels, 100, seed=0)
    assert index.dtype == torch.int64 and len(index) == 100
    assert len(index.unique()) == 100
    assert torch.equal(torch.bincount(many_labels[index], minlength=10), torch.full((10,), 10))


def test_labeled_subset_is_seeded(many_labels):
    assert torch.equal(labeled_subset(many_labels, 50, seed=1), labeled_subset(many_labels, 50, seed=1))
    assert not torch.equal(labeled_subset(many_labels, 50, seed=1), labeled_subset(many_labels, 50, seed=2))


def test_labeled_subset_errors(many_labels):
    with pytest.raises(ValueError, match="multiple of 10"):
        labeled_subset(many_labels, 15)
    with pytest.raises(ValueError, match="digit"):
        labeled_subset(many_labels, 600)  # 60 per class, only 50 of each


# -- batches ----------------------------------------------------------------------------------------------------
def test_batches_are_aligned_and_cover_everything_once():
    x = torch.arange(23)
    y = x * 10
    seen = []
    sizes = []
    for bx, by in batches(x, y, batch_size=5, generator=torch.Generator().manual_seed(0)):
        assert torch.equal(by, bx * 10)
        seen.append(bx)
        sizes.append(len(bx))
    assert sizes == [5, 5, 5, 5, 3]
    assert torch.equal(torch.cat(seen).sort().values, x)
    assert not torch.equal(torch.cat(seen), x)  # shuffled


def test_batches_drop_last_shuffle_and_single_tensor():
    x = torch.arange(23)
    dropped = list(batches(x, batch_size=5, drop_last=True, generator=torch.Generator().manual_seed(0)))
    assert [len(b) for b in dropped] == [5, 5, 5, 5]
    assert all(torch.is_tensor(b) for b in dropped)  # one tensor in, plain tensors out
    ordered = list(batches(x, batch_size=10, shuffle=False))
    assert torch.equal(torch.cat(ordered), x)


def test_batches_are_seeded():
    x = torch.arange(50)
    first = torch.cat(list(batches(x, batch_size=7, generator=torch.Generator().manual_seed(4))))
    again = torch.cat(list(batches(x, batch_size=7, generator=torch.Generator().manual_seed(4))))
    other = torch.cat(list(batches(x, batch_size=7, generator=torch.Generator().manual_seed(5))))
    assert torch.equal(first, again) and not torch.equal(first, other)


def test_batches_errors():
    with pytest.raises(ValueError, match="same length"):
        list(batches(torch.zeros(5), torch.zeros(6), batch_size=2))
    with pytest.raises(ValueError, match="batch_size"):
        list(batches(torch.zeros(5), batch_size=0))
    with pytest.raises(ValueError):
        list(batches(batch_size=2))


# -- check_images / check_labels --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 784), (3, 28, 28), (3, 1, 28, 28)])
def test_check_images_flattens_accepted_shapes(shape):
    images = torch.rand(shape)
    flat = check_images(images)
    assert flat.shape == (3, 784)
    assert torch.equal(flat, images.reshape(3, 784))


@pytest.mark.parametrize("shape", [(3, 27, 27), (3, 783), (784,), (3, 3, 28, 28)])
def test_check_images_rejects_wrong_shapes(shape):
    with pytest.raises(ValueError, match="expected MNIST images of shape"):
        check_images(torch.rand(shape))


def test_check_images_rejects_integer_images_and_non_tensors():
    with pytest.raises(ValueError, match="255"):
        check_images(torch.zeros(2, 784, dtype=torch.uint8))
    with pytest.raises(TypeError):
        check_images([[0.0] * 784])


def test_check_labels():
    assert check_labels(torch.tensor([0, 9], dtype=torch.int32)).dtype == torch.int64
    with pytest.raises(ValueError, match="0..9"):
        check_labels(torch.tensor([0, 10]))
    with pytest.raises(ValueError, match="0..9"):
        check_labels(torch.tensor([-1, 3]))
    with pytest.raises(ValueError, match="integers"):
        check_labels(torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="0..3"):
        check_labels(torch.tensor([4]), n_classes=4)


# -- settings ---------------------------------------------------------------------------------------------------
def test_pick_device_cpu_and_auto():
    assert settings.pick_device("cpu") == torch.device("cpu")
    assert settings.pick_device().type in {"cpu", "cuda", "mps"}
    assert settings.pick_device("auto") == settings.pick_device(None)


@pytest.mark.parametrize("name", ["nonsense", "meta"])
def test_pick_device_rejects_unknown_devices(name):
    with pytest.raises(ValueError, match="cpu"):
        settings.pick_device(name)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_pick_device_cuda_without_cuda_gives_advice():
    with pytest.raises(ValueError, match="not available.*cpu"):
        settings.pick_device("cuda")


def test_smoke_note(monkeypatch):
    monkeypatch.setenv("SAAE_FAST", "1")
    assert "SMOKE" in settings.smoke_note()
    monkeypatch.setenv("SAAE_FAST", "0")
    assert settings.smoke_note() == ""


def test_seed_everything_makes_torch_repeatable():
    generator = settings.seed_everything(7)
    first, drawn = torch.rand(3), torch.rand(3, generator=generator)
    generator = settings.seed_everything(7)
    assert torch.equal(first, torch.rand(3)) and torch.equal(drawn, torch.rand(3, generator=generator))
