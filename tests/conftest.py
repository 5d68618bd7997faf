"""Shared fixtures for the saae_lib unit tests.

Nothing here writes outside pytest's temporary folders: tests that touch the cache, the runs folder or the data
folder point SAAE_CACHE_DIR / SAAE_RUNS_DIR / SAAE_DATA_DIR at session temporary folders (see `isolated`).
Smoke mode is set per test (`fast` / `full` fixtures), whatever SAAE_FAST the suite runs under.
"""

import shutil
from types import SimpleNamespace

import pytest
import torch

from saae_lib import data as sdata

# A tiny slice of the real MNIST for training tests: enough to see a loss fall, small enough for a 2-core CPU.
TINY_SIZES = {"train": 600, "validation": 200, "test": 200}


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    """One intra-op thread for the whole session.

    The tests train tiny models; on a small shared CPU, two torch threads spin-wait on each other and make them
    10-50 times slower (measured: 0.3 s vs 10-23 s for the same four tiny runs). Restored at the end.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def mnist_root():
    """The folder holding MNIST/raw/*.gz ($SAAE_DATA_DIR, else the cache), verified; never written to."""
    root = sdata.data_root()
    try:
        sdata.ensure_mnist_files(root, download=True)
    except sdata.DataError as error:  # pragma: no cover - only without the data and without network
        pytest.skip(f"MNIST is not available: {error}")
    return root


@pytest.fixture(scope="session")
def session_dirs(tmp_path_factory, mnist_root):
    """Session-wide temporary cache and runs folders (the judge classifier is trained once into `cache`)."""
    return SimpleNamespace(
        cache=tmp_path_factory.mktemp("saae_cache"),
        runs=tmp_path_factory.mktemp("saae_runs"),
        data=mnist_root,
    )


def _set_env(patcher, dirs):
    patcher.setenv("SAAE_CACHE_DIR", str(dirs.cache))
    patcher.setenv("SAAE_RUNS_DIR", str(dirs.runs))
    patcher.setenv("SAAE_DATA_DIR", str(dirs.data))


@pytest.fixture
def isolated(monkeypatch, session_dirs):
    """Point the library's cache, runs and data folders at the session's temporary folders for one test."""
    _set_env(monkeypatch, session_dirs)
    return session_dirs


@pytest.fixture
def fast(monkeypatch):
    """Smoke mode on (SAAE_FAST=1: a run reads it once, when it is made)."""
    monkeypatch.setenv("SAAE_FAST", "1")


@pytest.fixture
def full(monkeypatch):
    """Smoke mode off, whatever SAAE_FAST says."""
    monkeypatch.setenv("SAAE_FAST", "0")


@pytest.fixture(scope="session")
def tiny_mnist(mnist_root):
    """A small MNIST (600 train / 200 validation / 200 test) built from the real files in smoke mode, on CPU.

    Shared by the whole session: tests must not modify its tensors in place.
    """
    with pytest.MonkeyPatch.context() as patcher:
        patcher.setenv("SAAE_FAST", "1")
        full_smoke = sdata.load_mnist(root=mnist_root, device="cpu", download=False, smoke=True)
    n_train, n_val, n_test = TINY_SIZES["train"], TINY_SIZES["validation"], TINY_SIZES["test"]
    return sdata.MNIST(
        train_images=full_smoke.train_images[:n_train].clone(),
        train_labels=full_smoke.train_labels[:n_train].clone(),
        val_images=full_smoke.val_images[:n_val].clone(),
        val_labels=full_smoke.val_labels[:n_val].clone(),
        test_images=full_smoke.test_images[:n_test].clone(),
        test_labels=full_smoke.test_labels[:n_test].clone(),
        device=torch.device("cpu"),
    )


@pytest.fixture
def tiny_options():
    """TrainConfig options for a tiny, deterministic CPU model (pass on with **)."""
    return dict(hidden=(32, 32), batch_size=100, precision="fp32", device="cpu")


@pytest.fixture
def raw_copy(tmp_path, mnist_root):
    """A writable copy of the four MNIST files: returns (root, raw folder) for tests that damage them."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in sdata.MNIST_FILES:
        shutil.copyfile(mnist_root / "MNIST" / "raw" / name, raw / name)  # copyfile: not the read-only mode
    return tmp_path, raw
