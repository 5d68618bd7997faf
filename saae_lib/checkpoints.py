"""Save and restore a whole training run: model, optimizers, random generator, history and config.

Writes go to a temporary file that is then renamed over the target, so a crash never leaves half a checkpoint.
Loading uses `weights_only=True`: a checkpoint holds tensors and plain Python values only.
"""

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import settings
from .data import MNIST
from .training import TrainConfig, Trainer

CHECKPOINT_NAME = "checkpoint.pt"


def atomic_save(obj, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(obj, file)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600 files; a checkpoint is an ordinary file
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def save_checkpoint(trainer: Trainer, path: str | os.PathLike) -> Path:
    """Write the trainer's full state to `path` (a file, or a folder that gets checkpoint.pt)."""
    path = Path(path)
    if path.is_dir() or path.suffix == "":
        path = path / CHECKPOINT_NAME
    return atomic_save(trainer.state_dict(), path)


def load_checkpoint(path: str | os.PathLike, data: MNIST | None = None, device: str | None = None) -> Trainer:
    """Rebuild the trainer saved at `path` (file or folder), ready to evaluate or to `fit` further.

    `device` overrides the device it was trained on (a GPU checkpoint opens on a CPU-only machine this way).
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: train one first (python -m saae_lib train ... --out DIR)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    config = dict(state["config"])
    if device is not None:
        config["device"] = device
    trainer = Trainer(TrainConfig(**config), data)
    trainer.load_state_dict(state)
    return trainer


def runs_dir() -> Path:
    """Where chapters keep trained models: $SAAE_RUNS_DIR, else ./runs (./runs-smoke in smoke mode, so smoke
    models are never mistaken for real ones)."""
    default = "runs-smoke" if settings.FAST else "runs"
    return Path(os.environ.get("SAAE_RUNS_DIR", default)).expanduser()


def same_run(saved: dict, wanted: dict) -> bool:
    """Equal configs, up to the device: a model trained on a GPU is the same run when reloaded on a CPU."""
    return {**saved, "device": None} == {**wanted, "device": None}


def train_or_load(name: str, data: MNIST | None = None, progress: bool | None = None, **options) -> Trainer:
    """Load the run `name` if it was trained before with exactly these options, else train it and save it.

    This lets a later chapter reuse a model an earlier chapter trained, while each chapter still runs alone.
    """
    path = runs_dir() / name / CHECKPOINT_NAME
    config = TrainConfig(**options).resolved()
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        if same_run(state["config"], asdict(config)) and state["smoke"] == settings.FAST:
            trainer = Trainer(config, data)
            if state["generator_device"] != trainer.device.type:  # reused for evaluation: no stream to continue
                state["generator"], state["generator_device"] = trainer.generator.get_state(), trainer.device.type
            trainer.load_state_dict(state)
            print(f"loaded {name!r} ({len(trainer.history)} epochs, trained earlier) from {shown(path)}")
            return trainer
        print(f"{shown(path)} was trained with other settings: training {name!r} again")
    trainer = Trainer(config, data)
    start = time.perf_counter()
    trainer.fit(progress=progress)
    last = trainer.history[-1]
    losses = ", ".join(f"{key} {value:.4f}" for key, value in last.items() if key not in {"epoch", "seconds"})
    print(f"trained {name!r}: {len(trainer.history)} epochs in {time.perf_counter() - start:.0f} s "
          f"on {trainer.device} ({'bf16' if trainer.use_bf16 else 'fp32'}); last epoch: {losses}")
    save_checkpoint(trainer, path)
    return trainer


def shown(path: Path) -> str:
    """A path as the reader should see it: relative to the working folder when possible."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
