"""Run-wide settings: smoke mode, device choice, seeding, cache folders."""

import os
import random
from pathlib import Path

import numpy as np
import torch

# Smoke mode shrinks data and epochs so every chapter runs in a couple of minutes on a laptop CPU.
# It exists for tests only: everything produced in it says so (see `smoke_note`).
FAST = os.environ.get("SAAE_FAST", "0").strip().lower() in {"1", "true", "yes", "on"}


# Progress bars (tqdm) while training; `make notebooks` turns them off so stored outputs stay clean.
PROGRESS = os.environ.get("SAAE_PROGRESS", "1").strip().lower() not in {"0", "false", "no", "off"}


def show_progress(progress: bool | None = None) -> bool:
    """An explicit choice wins; None means PROGRESS (SAAE_PROGRESS=0: no bars in stored notebook outputs)."""
    return PROGRESS if progress is None else progress


SMOKE_NOTE = "SMOKE RUN (SAAE_FAST=1): tiny data, few epochs - not real results"


def smoke_note() -> str:
    """A warning stamped on every output of a smoke run; empty in a real run."""
    return SMOKE_NOTE if FAST else ""


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
