"""Save and restore a whole training run: model, optimizers, random generator, history and config.

Writes go to a temporary file that is then renamed over the target, so a crash never leaves half a file.
Loading uses `weights_only=True` (a checkpoint holds tensors and plain Python values only) and checks what it
loads (keys, model, weights' shapes) before anything else is done with it.
"""

import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from . import settings
from .data import MNIST
from .models import MODELS
from .training import CONFIG_FIELDS, MODEL_OPTIONS, ConfigError, TrainConfig, Trainer

CHECKPOINT_NAME = "checkpoint.pt"
FORMAT = 2  # 2: options a model does not use are None (format 1 stored their defaults)
STATE_KEYS = ("config", "model", "optimizers", "generator", "generator_device", "history", "smoke")
# Options added after a checkpoint format was fixed -> the value that describes runs saved before they existed (a
# missing option must not take a newer default: the saved weights were trained without it).
OPTIONS_ADDED_LATER = {"lr_schedule": "constant", "batch_norm": False, "cuda_graph": "off"}
RETRAIN = "train the model again (python -m saae_lib train MODEL --out DIR --force) or restore the file"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, damaged or of another kind; the message names the file and what
    to do."""


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(binary file) on a temporary file beside `path`, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600 files; these are ordinary files
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def atomic_save(obj, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda file: torch.save(obj, file))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda file: file.write(text.encode()))


def read_state(path: Path, keys=STATE_KEYS, what="a saae_lib checkpoint", advice=RETRAIN) -> dict:
    """torch.load a file of plain tensors and values, or raise CheckpointError naming the file and what to do."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}: train one first (python -m saae_lib train ... --out DIR)") \
            from None
    except (PermissionError, IsADirectoryError) as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}; check the path and its "
                              "permissions") from None
    except Exception:  # a truncated zip (a RuntimeError, or an OSError), a foreign pickle, random bytes
        raise CheckpointError(f"{path} cannot be read as {what}: it is damaged, truncated or another kind of "
                              f"file; {advice}") from None
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        raise CheckpointError(f"{path} is not {what} (it lacks {', '.join(missing)}); {advice}")
    return state


def upgrade_config(config: dict) -> dict:
    """A format-1 config (options a model does not use stored with their defaults) in today's form."""
    config = dict(config)
    model = MODELS.get(config.get("model"))
    if model is None:
        return config
    for option in MODEL_OPTIONS:
        if option not in model.options:
            config[option] = None
    if config.get("prior") not in (None, "gaussian") and config.get("prior_std") == 1.0:
        config["prior_std"] = None  # format 1 stored the Gaussian's default even for the other priors
    return config


def checked_config(state: dict, path: Path) -> dict:
    config = state["config"]
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds no run configuration; {RETRAIN}")
    unknown = sorted(set(config) - set(CONFIG_FIELDS))
    if unknown:
        raise CheckpointError(f"{path} was written by another version of saae_lib (unknown options: "
                              f"{', '.join(unknown)}); {RETRAIN}")
    if state.get("format", 1) < FORMAT:
        config = upgrade_config(config)
    model = MODELS.get(config.get("model"))
    for option, before in OPTIONS_ADDED_LATER.items():
        if option not in config and model is not None and (option not in MODEL_OPTIONS or option in model.options):
            config = {**config, option: before}
    try:
        config = TrainConfig(**config)
        config.resolved()
    except (ConfigError, TypeError) as error:
        raise CheckpointError(f"{path} holds an invalid configuration ({error}); {RETRAIN}") from None
    return asdict(config)


def checkpoint_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() or path.suffix == "" else path


def save_checkpoint(trainer: Trainer, path: str | os.PathLike) -> Path:
    """Write the trainer's full state to `path` (a file, or a folder that gets checkpoint.pt)."""
    return atomic_save({**trainer.state_dict(), "format": FORMAT}, checkpoint_file(path))


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """(state, config) of the checkpoint at `path` (file or folder), checked; CheckpointError if it is not usable."""
    path = checkpoint_file(path)
    state = read_state(path)
    return state, checked_config(state, path)


def usable_device(name: str) -> str:
    try:
        settings.pick_device(name)
        return name
    except ValueError:
        return "auto"


def load_checkpoint(path: str | os.PathLike, data: MNIST | None = None, device: str | None = None) -> Trainer:
    """Rebuild the trainer saved at `path` (file or folder), ready to evaluate or to `fit` further.

    `device` overrides the device it was trained on (by default: that device if it is here, else the best one).
    """
    state, config = read_checkpoint(path)
    return restore(state, config, checkpoint_file(path), data, device)


def restore(state: dict, config: dict, path: Path, data: MNIST | None = None, device: str | None = None,
            cuda_graph: str | None = None) -> Trainer:
    """The trainer of a checkpoint already read (read_checkpoint) from `path`; `device` and `cuda_graph` override
    where and how it trained (neither changes what the run is)."""
    config = {**config, "device": device if device is not None else usable_device(config["device"])}
    if cuda_graph is not None:
        config["cuda_graph"] = cuda_graph
    elif config.get("cuda_graph") == "on" and settings.pick_device(config["device"]).type != "cuda":
        config["cuda_graph"] = "auto"  # trained with a CUDA graph, used elsewhere: the graph only changed the speed
    try:
        return Trainer(TrainConfig(**config), data, state=state)
    except ConfigError:
        raise
    except ValueError as error:  # weights or optimizer states that do not fit the model the config describes
        raise CheckpointError(f"{path} is damaged: {error}; {RETRAIN}") from None


def runs_dir() -> Path:
    """Where chapters keep trained models: $SAAE_RUNS_DIR, else ./runs (./runs-smoke in smoke mode, so smoke
    models are never mistaken for real ones)."""
    default = "runs-smoke" if settings.FAST else "runs"
    return Path(os.environ.get("SAAE_RUNS_DIR", default)).expanduser()


# Options that say where and how fast a run trains, not what it is: a model trained on a GPU (with or without a CUDA
# graph) is the same run when reloaded on a CPU, and a resumed run may change them.
PLACEMENT_OPTIONS = ("device", "cuda_graph")


def same_run(saved: dict, wanted: dict) -> bool:
    """Equal configs, up to PLACEMENT_OPTIONS."""
    def what(config):
        return {**config, **dict.fromkeys(PLACEMENT_OPTIONS)}
    return what(saved) == what(wanted)


def last_losses(trainer: Trainer) -> str:
    """The last epoch's losses and validation numbers, as train_or_load prints them."""
    last = trainer.history[-1] if trainer.history else {}
    return ", ".join(f"{key} {value:.4f}" for key, value in last.items() if key not in {"epoch", "seconds"})


def train_or_load(name: str, data: MNIST | None = None, progress: bool | None = None, **options) -> Trainer:
    """Load the run `name` if it was trained before with exactly these options, else train it and save it.

    This lets a later chapter reuse a model an earlier chapter trained, while each chapter still runs alone.
    """
    path = runs_dir() / name / CHECKPOINT_NAME
    config = TrainConfig(**options).resolved()
    if path.is_file():
        try:
            state, saved = read_checkpoint(path)
        except CheckpointError as error:
            print(f"{error}: training {name!r} again")
        else:
            if same_run(saved, asdict(config)) and state["smoke"] == settings.FAST:
                device = settings.pick_device(config.device)
                if state["generator_device"] != device.type:  # reused for evaluation: no stream to continue
                    fresh = torch.Generator(device).manual_seed(config.seed)
                    state = {**state, "generator": fresh.get_state(), "generator_device": device.type}
                trainer = Trainer(config, data, state=state)
                print(f"loaded {name!r} ({len(trainer.history)} epochs, trained earlier) from {shown(path)}; "
                      f"last epoch: {last_losses(trainer)}")
                return trainer
            print(f"{shown(path)} was trained with other settings: training {name!r} again")
    trainer = Trainer(config, data)
    start = time.perf_counter()
    trainer.fit(progress=progress)
    print(f"trained {name!r}: {len(trainer.history)} epochs in {time.perf_counter() - start:.0f} s "
          f"on {trainer.device} ({'bf16' if trainer.use_bf16 else 'fp32'}); last epoch: {last_losses(trainer)}")
    save_checkpoint(trainer, path)
    return trainer


def shown(path: Path) -> str:
    """A path as the reader should see it: relative to the working folder when possible."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
