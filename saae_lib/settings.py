"""Run-wide settings: the book's repository, smoke mode, device choice, seeding, cache folders."""

import os
import random
from pathlib import Path

import numpy as np
import torch

# Where the book and this library are published: the one place the address is written. The chapters' Colab install
# cells (git+REPOSITORY@v__version__), _config.yml's repository buttons and pyproject.toml's project URL are copies
# that scripts/sync_repository.py writes from it, and pretrained.fetch downloads from this version's tag there. It is
# here, in the package, because the copy installed in Colab needs it too; a plain literal, so that the publishing
# scripts read it without importing the library (and torch).
REPOSITORY = "https://github.com/aae-book/adversarial-autoencoders-book"

ON, OFF = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}


class SettingError(ValueError):
    """An environment variable of the library's with a value it cannot read; the message says what to set."""


def switch(variable: str, default: bool) -> bool:
    """An on/off environment variable: 1/true/yes/on or 0/false/no/off (any case); unset or empty: `default`.
    Anything else is refused, never read as either (SAAE_FAST=ture must not start a full run)."""
    raw = os.environ.get(variable)
    value = (raw or "").strip().lower()
    if not value:
        return default
    if value in ON:
        return True
    if value in OFF:
        return False
    raise SettingError(f"{variable}={raw!r} is neither on nor off: set it to 1 or 0 (or unset it)")


def smoke_mode() -> bool:
    """Smoke mode (SAAE_FAST=1) shrinks data and epochs so every chapter runs in a couple of minutes on a laptop CPU.

    It exists for tests only: everything produced in it says so (see `smoke_note`). A run asks once, when it is
    made (the Trainer keeps the answer as `trainer.smoke`), and reads it from there."""
    return switch("SAAE_FAST", default=False)


def show_progress(progress: bool | None = None) -> bool:
    """An explicit choice wins; None means SAAE_PROGRESS (default on; `make notebooks` sets SAAE_PROGRESS=0 so that
    stored outputs have no progress bars)."""
    return switch("SAAE_PROGRESS", default=True) if progress is None else progress


SMOKE_NOTE = "SMOKE RUN (SAAE_FAST=1): tiny data, few epochs - not real results"


def smoke_note(smoke: bool | None = None) -> str:
    """A warning stamped on every output of a smoke run (default: of smoke mode now); empty in a real run."""
    return SMOKE_NOTE if (smoke_mode() if smoke is None else smoke) else ""


def pick_device(name: str | None = None) -> torch.device:
    """The requested device, or the best available one: cuda, then mps, then cpu."""
    if name is None or name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as error:
        raise ValueError(f"unknown device {name!r}: use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} asked for, but CUDA is not available here: use 'cpu' or 'auto'")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} asked for, but MPS is not available here: use 'cpu' or 'auto'")
    if device.type not in {"cpu", "cuda", "mps"}:
        raise ValueError(f"device {name!r} is not supported: use 'auto', 'cpu', 'cuda' or 'mps'")
    return device


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; return a CPU generator for the library's own sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def cache_dir() -> Path:
    """Where downloaded data and the judge classifier live: $SAAE_CACHE_DIR or ~/.cache/saae_lib."""
    return Path(os.environ.get("SAAE_CACHE_DIR", Path.home() / ".cache" / "saae_lib")).expanduser()


class ConfigError(ValueError):
    """An option that the run cannot use: `option` names it (a TrainConfig field; None for a combination)."""

    def __init__(self, option: str | None, message: str):
        super().__init__(message)
        self.option = option
