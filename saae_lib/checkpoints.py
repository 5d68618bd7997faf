"""Save and restore a whole training run: model, optimizers, random generator, history and config.

Writes go to a temporary file that is flushed to disk and then renamed over the target, so a crash never leaves
half a file; temporary files left by killed runs are removed by the next write. Before anything is loaded, the file
is checked as an archive: only stored (uncompressed) records no larger than the file, each matching the CRC-32 that
torch.save wrote for it, so a flipped byte is caught and a crafted file cannot make the loader allocate more than
its own size. Loading uses `weights_only=True` (a checkpoint holds tensors and plain Python values only); then the
format, the keys, the configuration and the weights' shapes (against the model the configuration describes, built
on the meta device, so no memory is spent on it) are checked before anything else is done with it.
"""

import errno
import hashlib
import os
import re
import tempfile
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import torch

from . import settings
from .data import MNIST
from .models import MODELS
from .training import CONFIG_FIELDS, MODEL_OPTIONS, ConfigError, TrainConfig, Trainer, machine_recipe

CHECKPOINT_NAME = "checkpoint.pt"
# 3: the data the run was trained on is recorded ("data", see data_fingerprint); 2: options a model does not use are
# None (format 1 stored their defaults). This version reads formats 1 to FORMAT.
FORMAT = 3
STATE_KEYS = ("config", "model", "optimizers", "generator", "generator_device", "history", "smoke")  # the Trainer's
# What each format may hold besides STATE_KEYS: anything else in a file of a format this version knows is damage.
EXTRA_KEYS = {1: {"format"}, 2: {"format"}, 3: {"format", "data"}}
UPGRADE = "upgrade saae_lib (pip install -U saae-lib)"
# Options added after a checkpoint format was fixed -> the value that describes runs saved before they existed (a
# missing option must not take a newer default: the saved weights were trained without it).
OPTIONS_ADDED_LATER = {"lr_schedule": "constant", "batch_norm": False, "cuda_graph": "off", "recipe": "full",
                       "optimizer": "adam", "input_dropout": 0.0, "hidden_noise": 0.0}
RETRAIN = "train the model again (python -m saae_lib train MODEL --out DIR --force) or restore the file"


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, unreadable, damaged or of another kind; the message names the file and what
    to do."""


class DamagedCheckpoint(CheckpointError):
    """A file that was read but is damaged, truncated or of another kind; `reason` says what is wrong with it."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


class ArchiveDamage(ValueError):
    """What check_archive found wrong (turned into a DamagedCheckpoint by read_state)."""


# A temporary file untouched for this long, whose writer is gone, is a leftover of a killed run (a writer touches
# its file at every write; the delay also spares writers of another machine or container sharing the folder).
STALE_AFTER_S = 60.0
STARTED = time.time()  # about when this process started: older temporary files without a pid are not its own


def atomic_write(path: str | os.PathLike, write) -> Path:
    """Call write(binary file) on a temporary file beside `path`, flush it to disk, then rename it over `path`.

    The temporary file is named `.NAME.PID-XXXXXXXX.tmp`; those of `path` that killed writers left behind are removed
    first. An OSError names `path`; whatever fails, the temporary file is removed and `path` is as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # on disk before the rename: a power cut cannot leave an empty checkpoint
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes 0600 files; these are ordinary files
        os.replace(temporary, path)
    except OSError as error:
        Path(temporary).unlink(missing_ok=True)
        if error.filename is None and error.errno is not None:  # e.g. ENOSPC from a flush: say which file
            raise OSError(error.errno, error.strerror or os.strerror(error.errno), str(path)) from None
        raise
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    sync_folder(path.parent)
    return path


def sync_folder(folder: Path) -> None:
    """fsync a folder, so that a rename in it is on disk too (some filesystems and systems refuse: fine)."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


def temporary_pid(name: str, target: str) -> int | None | bool:
    """The writer's pid in a temporary file name of `target` (None: an older name without one; False: not one of
    atomic_write's temporary files for `target`)."""
    prefix = f".{target}."
    if not (name.startswith(prefix) and name.endswith(".tmp")):
        return False
    middle = name[len(prefix):-len(".tmp")]
    if match := re.fullmatch(r"([0-9]+)-[a-z0-9_]{8}", middle):
        return int(match.group(1))
    return None if re.fullmatch(r"[a-z0-9_]{8}", middle) else False


def process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would end it there: never take another writer's file for a leftover
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, and belongs to someone else
        return True
    except (OverflowError, ValueError, OSError):
        return False
    return True


def left_behind(leftover: Path, pid: int | None) -> bool:
    """A temporary file or folder whose writer (`pid`, None for an older name without one) is gone: another process's,
    untouched for STALE_AFTER_S, and its process dead (no pid: older than this process). OSError if it is gone."""
    if pid == os.getpid():
        return False
    modified = leftover.stat().st_mtime
    if time.time() - modified < STALE_AFTER_S:
        return False
    return modified < STARTED if pid is None else not process_alive(pid)


def remove_stale_temporaries(path: Path) -> None:
    """Remove the temporary files of `path` whose writer is gone (runs killed while saving leave them behind)."""
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        pid = temporary_pid(name, path.name)
        if pid is False:
            continue
        leftover = path.parent / name
        try:
            if left_behind(leftover, pid):
                leftover.unlink()
        except OSError:  # gone already, or not ours to remove: never a reason to fail a save
            continue


class RecordingFile:
    """A file whose write errors are kept: torch turns them into a RuntimeError that no longer says which."""

    def __init__(self, file):
        self.file = file
        self.error: OSError | None = None

    def write(self, data):
        try:
            return self.file.write(data)
        except OSError as error:
            self.error = error
            raise

    def flush(self):
        return self.file.flush()


def atomic_save(obj, path: str | os.PathLike) -> Path:
    """torch.save `obj` to `path` atomically, with a CRC-32 for every record (read_state checks them).

    A failed write (a full disk, a file size limit) is an OSError naming `path`, not torch's RuntimeError.
    """
    path = Path(path)

    def write(file):
        recording = RecordingFile(file)
        # Newer torch releases can skip the CRC-32s (set_crc32_options); older ones always write them.
        switchable = hasattr(torch.serialization, "set_crc32_options")
        crc32 = torch.serialization.get_crc32_options() if switchable else True
        if switchable:
            torch.serialization.set_crc32_options(True)
        try:
            torch.save(obj, recording)
        except RuntimeError as error:
            raise write_failure(error, recording.error, path) from None
        finally:
            if switchable:
                torch.serialization.set_crc32_options(crc32)

    return atomic_write(path, write)


def write_failure(error: RuntimeError, cause: OSError | None, path: Path) -> BaseException:
    """The OSError behind torch's RuntimeError for a failed write to `path` (the error itself if it is another)."""
    if cause is not None and cause.errno is not None:
        return OSError(cause.errno, os.strerror(cause.errno), str(path))
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if "inline_container" not in message and "write" not in message:
        return error  # not a failed write: a bug, let it show
    try:
        stats = os.statvfs(path.parent)
        full = stats.f_bavail * stats.f_frsize < 1 << 20
    except (OSError, AttributeError):
        full = False
    if full:
        return OSError(errno.ENOSPC, "No space left on device", str(path))
    return OSError(errno.EIO, f"the file could not be written ({message})", str(path))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return atomic_write(path, lambda file: file.write(text.encode()))


def check_archive(path: Path) -> None:
    """Check the torch archive at `path` before torch.load reads it; ArchiveDamage says what is wrong.

    torch.save writes stored (uncompressed) records, so no record, nor all of them together, can hold more bytes
    than the file: a compressed record or larger sizes are a crafted or damaged file, refused before torch.load
    would allocate them. Each record's CRC-32 (which torch.save writes, see atomic_save) is then checked, reading the
    file in bounded chunks: a byte changed anywhere in a record's data is found. Files saved with torch's CRC-32
    switched off (every CRC zero) cannot be checked so, and are let through.
    """
    size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        records = archive.infolist()
        for record in records:
            if record.compress_type != zipfile.ZIP_STORED:
                raise ArchiveDamage(f"record {record.filename} is compressed; torch.save stores its records as "
                                    "they are")
            if record.flag_bits & 0x1:
                raise ArchiveDamage(f"record {record.filename} is encrypted")
            if record.compress_size != record.file_size:
                raise ArchiveDamage(f"record {record.filename} declares two sizes ({record.compress_size:,} and "
                                    f"{record.file_size:,} bytes)")
            if record.file_size > size:
                raise ArchiveDamage(f"record {record.filename} declares {record.file_size:,} bytes in a file of "
                                    f"{size:,}")
        total = sum(record.file_size for record in records)
        if total > size:
            raise ArchiveDamage(f"its records declare {total:,} bytes in all in a file of {size:,}")
        if not any(record.CRC for record in records):
            return
        for record in records:
            try:
                with archive.open(record) as stream:
                    while stream.read(1 << 24):
                        pass
            except zipfile.BadZipFile as error:
                if "CRC" in str(error):
                    raise ArchiveDamage(f"record {record.filename} fails its CRC-32 check: bytes changed on disk "
                                        "or on the way") from None
                raise ArchiveDamage(f"record {record.filename} is unreadable ({error})") from None


def read_state(path: Path, keys=STATE_KEYS, what="a saae_lib checkpoint", advice=RETRAIN,
               extra_keys: dict[int, set] | None = None) -> dict:
    """torch.load a file of plain tensors and values, or raise CheckpointError naming the file and what to do.

    With `extra_keys` (format -> the keys that format may hold besides `keys`), a file of a newer format than its
    largest is refused (asking to upgrade), and so is one with keys its format does not have.
    """
    def damaged(message: str, reason: str):
        return DamagedCheckpoint(f"{message}; {advice}", reason)

    try:
        check_archive(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}: train one first (python -m saae_lib train ... --out DIR)") \
            from None
    except (PermissionError, IsADirectoryError) as error:
        raise CheckpointError(f"cannot read {path}: {error.strerror or error}; check the path and its "
                              "permissions") from None
    except ArchiveDamage as error:
        raise damaged(f"{path} is damaged ({error})", str(error)) from None
    except Exception:  # not a zip archive (random bytes, truncated, empty), a foreign pickle, a truncated record
        raise damaged(f"{path} cannot be read as {what}: it is damaged, truncated or another kind of file",
                      "it cannot be read: truncated, or another kind of file") from None
    if extra_keys is not None and isinstance(state, dict):
        version = state.get("format", 1)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise damaged(f"{path} is damaged (its format is {version!r})", "invalid format")
        if version > max(extra_keys):
            raise CheckpointError(f"{path} was written by a newer saae_lib (checkpoint format {version}; this version "
                                  f"reads up to {max(extra_keys)}): {UPGRADE}")
    missing = [key for key in keys if not isinstance(state, dict) or key not in state]
    if missing:
        raise damaged(f"{path} is not {what} (it lacks {', '.join(missing)})", f"it lacks {', '.join(missing)}")
    if extra_keys is not None:
        unknown = sorted(map(str, set(state) - set(keys) - extra_keys[state.get("format", 1)]))
        if unknown:
            raise damaged(f"{path} is damaged (entries that checkpoint format {state.get('format', 1)} does not "
                          f"have: {', '.join(unknown)})", f"unknown entries {', '.join(unknown)}")
    return state


def upgrade_config(config: dict) -> dict:
    """A format-1 config (options a model does not use stored with their defaults) in today's form."""
    config = dict(config)
    model = MODELS.get(config.get("model"))
    if model is None:
        return config
    for option in MODEL_OPTIONS:
        if option not in model.uses():
            config[option] = None
    if config.get("prior") not in (None, "gaussian") and config.get("prior_std") == 1.0:
        config["prior_std"] = None  # format 1 stored the Gaussian's default even for the other priors
    return config


def checked_config(state: dict, path: Path) -> dict:
    config = state["config"]
    if not isinstance(config, dict):
        raise DamagedCheckpoint(f"{path} holds no run configuration; {RETRAIN}", "no run configuration")
    unknown = sorted(map(str, set(config) - set(CONFIG_FIELDS)))
    if unknown:
        raise CheckpointError(f"{path} was written by another version of saae_lib (unknown options: "
                              f"{', '.join(unknown)}); {RETRAIN}")
    if state.get("format", 1) < 2:
        config = upgrade_config(config)
    model = MODELS.get(config.get("model"))
    for option, before in OPTIONS_ADDED_LATER.items():
        if option not in config and model is not None and (option not in MODEL_OPTIONS or option in model.uses()):
            config = {**config, option: before}
    try:
        resolved = TrainConfig(**config).resolved()
    except (ConfigError, TypeError) as error:
        raise DamagedCheckpoint(f"{path} holds an invalid configuration ({error}); {RETRAIN}",
                                f"invalid configuration: {error}") from None
    return asdict(resolved)  # what the Trainer saved (its resolved config), checked


def checkpoint_file(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path / CHECKPOINT_NAME if path.is_dir() or path.suffix == "" else path


def data_fingerprint(data: MNIST) -> dict:
    """What a run was trained on, in short: the sizes of the three splits and a digest of all their labels and of
    the pixels of 32 images of each (as integers 0-255, the same on every device). A millisecond or two."""
    digest = hashlib.sha256()
    sizes = {}
    for split, images, labels in (("train", data.train_images, data.train_labels),
                                  ("validation", data.val_images, data.val_labels),
                                  ("test", data.test_images, data.test_labels)):
        sizes[split] = len(images)
        digest.update(f"{split} {len(images)} {len(labels)}".encode())
        digest.update(labels.detach().to("cpu", torch.int64).contiguous().numpy().tobytes())
        if len(images):
            rows = torch.linspace(0, len(images) - 1, min(32, len(images))).long().to(images.device)
            pixels = (images[rows].detach().float() * 255).round().to("cpu", torch.int64)
            digest.update(pixels.contiguous().numpy().tobytes())
    return {**sizes, "digest": digest.hexdigest()[:16]}


def valid_fingerprint(record) -> bool:
    return (isinstance(record, dict) and set(record) == {"train", "validation", "test", "digest"}
            and all(isinstance(record[split], int) for split in ("train", "validation", "test"))
            and isinstance(record["digest"], str))


def save_checkpoint(trainer: Trainer, path: str | os.PathLike) -> Path:
    """Write the trainer's full state to `path` (a file, or a folder that gets checkpoint.pt), with what it was
    trained on (data_fingerprint)."""
    state = {**trainer.state_dict(), "format": FORMAT}
    if getattr(trainer, "data", None) is not None:
        state["data"] = data_fingerprint(trainer.data)
    return atomic_save(state, checkpoint_file(path))


def trainer_state(state: dict) -> dict:
    """The part of a checkpoint that is the Trainer's (without what save_checkpoint adds around it)."""
    return {key: state[key] for key in STATE_KEYS}


def shape_text(shape) -> str:
    return "x".join(map(str, shape)) or "a scalar"


def check_weights(state: dict, config: dict, path: Path, optional: tuple[str, ...] = ()) -> None:
    """Refuse weights that do not fit the model `config` (a resolved config, checked already) describes, before that
    model is built: it is built on the meta device (no memory, no random draw), so a small file cannot make the
    loader build a huge model. The weights of the submodules named in `optional` may be left out, all or none of
    each (a pretrained model's training-only modules)."""
    model = config["model"]
    weights = state["model"]
    if not isinstance(weights, dict) or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                                for key, value in weights.items()):
        raise DamagedCheckpoint(f"{path} is damaged: its weights are not a table of tensors; {RETRAIN}",
                                "weights are not a table of tensors")
    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        expected = MODELS[model].from_config(TrainConfig(**config)).state_dict()
    problem = None
    for module in optional:
        keys = [key for key in expected if key.startswith(f"{module}.")]
        if keys and not any(key in weights for key in keys):  # left out whole: nothing to check
            expected = {key: value for key, value in expected.items() if key not in keys}
    for key, value in expected.items():
        if key not in weights:
            problem = f"{key} is missing"
        elif tuple(weights[key].shape) != tuple(value.shape):
            problem = (f"{key} is {shape_text(weights[key].shape)} in the file, its configuration makes it "
                       f"{shape_text(value.shape)}")
        if problem:
            break
    else:
        unexpected = [key for key in weights if key not in expected]
        if unexpected:
            problem = f"{unexpected[0]} is not part of it"
    if problem:
        raise DamagedCheckpoint(f"{path} is damaged: its weights do not fit the {model} model its configuration "
                                f"describes ({problem}); {RETRAIN}", problem)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict, dict]:
    """(state, config) of the checkpoint at `path` (file or folder), checked; CheckpointError if it is not usable."""
    path = checkpoint_file(path)
    state = read_state(path, extra_keys=EXTRA_KEYS)
    config = checked_config(state, path)
    if "data" in state and not valid_fingerprint(state["data"]):
        raise DamagedCheckpoint(f"{path} is damaged (its record of the training data is malformed); {RETRAIN}",
                                "malformed data record")
    check_weights(state, config, path)
    return state, config


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
        return Trainer(TrainConfig(**config), data, state=trainer_state(state))
    except ConfigError:
        raise
    except ValueError as error:  # weights or optimizer states that do not fit the model the config describes
        raise CheckpointError(f"{path} is damaged: {error}; {RETRAIN}") from None


def runs_dir() -> Path:
    """Where chapters keep trained models: $SAAE_RUNS_DIR, else ./runs (./runs-smoke in smoke mode, so smoke
    models are never mistaken for real ones)."""
    default = "runs-smoke" if settings.smoke_mode() else "runs"
    return Path(os.environ.get("SAAE_RUNS_DIR", default)).expanduser()


# Options that say where and how fast a run trains, not what it is: a model trained on a GPU (with or without a CUDA
# graph) is the same run when reloaded on a CPU, and a resumed run may change them.
PLACEMENT_OPTIONS = ("device", "cuda_graph")


def same_run(saved: dict, wanted: dict) -> bool:
    """Equal configs, up to PLACEMENT_OPTIONS and the recipe (its values are in the config: the same settings reached
    through another recipe are the same run)."""
    def what(config):
        return {**config, **dict.fromkeys((*PLACEMENT_OPTIONS, "recipe"))}
    return what(saved) == what(wanted)


def last_losses(trainer: Trainer) -> str:
    """The last epoch's losses and validation numbers, as train_or_load prints them."""
    last = trainer.history[-1] if trainer.history else {}
    return ", ".join(f"{key} {value:.4f}" for key, value in last.items() if key not in {"epoch", "seconds"})


def train_or_load(name: str, data: MNIST | None = None, progress: bool | None = None, *,
                  pretrained: str | None = None, train: bool | None = None, **options) -> Trainer:
    """Load the run `name` if it was trained before with exactly these options, else train it and save it.

    This lets a later chapter reuse a model an earlier chapter trained, while each chapter still runs alone. A run
    trained on other data (or saved before runs recorded their data) is trained again; so is a damaged one. A file
    that is not this version's to replace (a newer format, an unreadable file) raises CheckpointError.

    pretrained: the name of a shipped model that stands for this run (e.g. "semi-100"), taken from this checkout's
    pretrained/NAME, else from the cache, downloaded there from this version's tag if need be (pretrained.fetch). It
    stands for the run only if it was trained with the run's options under the full recipe (whatever `recipe` the
    run asks: the shipped models are trained with the full one), the same seed included, on the same data and in
    the same mode (smoke or not); where and how fast it trained (device, cuda_graph) do not matter.
    train: None (default): use the pretrained model where this run would not train on a CUDA GPU (machine_recipe is
    not "full"), else train; True: never use it (train, or reuse runs/NAME as without `pretrained`); False: never
    train (a one-line PretrainedError if no pretrained model stands for the run). Where the pretrained model cannot
    be used (no network, a changed file, other settings, ...) one line says why, and the run is trained instead.
    The trainer of a pretrained model has its manifest as `trainer.pretrained`, its history and no optimizer state;
    nothing is written to runs/.
    """
    check_run_name(name)
    if not (train is None or isinstance(train, bool)):
        raise ValueError(f"train_or_load: train must be None, True or False, not {train!r}")
    if pretrained is not None and not (isinstance(pretrained, str) and RUN_NAME.fullmatch(pretrained)):
        raise ValueError(f"train_or_load: pretrained={pretrained!r} is not the name of a pretrained model (a plain "
                         "name such as 'semi-100')")
    if train is False and pretrained is None:
        raise ValueError(f"train_or_load({name!r}, train=False) never trains, so it needs pretrained=NAME: the "
                         "pretrained model that stands for the run")
    path = runs_dir() / name / CHECKPOINT_NAME
    config = TrainConfig(**options).resolved()
    if pretrained is not None and (train is False or (train is None and machine_recipe(config.device) != "full")):
        from . import pretrained as shipped  # here: pretrained.py builds on this module

        try:
            return shipped.stand_in(pretrained, name, options, data)
        except shipped.PretrainedError as error:
            if train is False:
                raise shipped.PretrainedError(f"train_or_load({name!r}, pretrained={pretrained!r}, train=False) has "
                                              f"no model to load: {error}") from None
            instead = (f"trying {shown(path)} instead" if path.is_file() else f"training {name!r} instead")
            print(f"{error}; {instead}")
            if getattr(error, "data", None) is not None:
                data = error.data  # loaded already (data=None: the default data)
    if path.is_file():
        try:
            state, saved = read_checkpoint(path)
        except DamagedCheckpoint as error:
            print(f"{shown(path)} is damaged ({error.reason}): training {name!r} again")
        else:
            if not (same_run(saved, asdict(config)) and state["smoke"] == settings.smoke_mode()):
                print(f"{shown(path)} was trained with other settings: training {name!r} again")
            else:
                device = settings.pick_device(config.device)
                if state["generator_device"] != device.type:  # reused for evaluation: no stream to continue
                    fresh = torch.Generator(device).manual_seed(config.seed)
                    state = {**state, "generator": fresh.get_state(), "generator_device": device.type}
                try:
                    trainer = Trainer(config, data, state=trainer_state(state))
                except ConfigError:
                    raise
                except ValueError as error:  # optimizer states that do not fit the model
                    print(f"{shown(path)} is damaged ({error}): training {name!r} again")
                else:
                    other = other_data(state.get("data"), data_fingerprint(trainer.data))
                    if other is None:
                        print(f"loaded {name!r} ({len(trainer.history)} epochs, trained earlier) from {shown(path)}; "
                              f"last epoch: {last_losses(trainer)}")
                        return trainer
                    print(f"{shown(path)} {other}: training {name!r} again")
                    data = trainer.data  # loaded already (data=None: the default data)
    trainer = Trainer(config, data)
    start = time.perf_counter()
    trainer.fit(progress=progress)
    print(f"trained {name!r}: {len(trainer.history)} epochs in {time.perf_counter() - start:.0f} s "
          f"on {trainer.device} ({'bf16' if trainer.use_bf16 else 'fp32'}); last epoch: {last_losses(trainer)}")
    save_checkpoint(trainer, path)
    return trainer


RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")


def run_name(stem: str, seed: int) -> str:
    """runs/ name of a seed's model: `stem` for seed 0 (what a chapter trains), `stem_seedK` for the others."""
    return stem if seed == 0 else f"{stem}_seed{seed}"


def check_run_name(name) -> None:
    """A run's name is one plain folder name inside runs_dir(): never a path that leads elsewhere."""
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise ValueError(f"train_or_load: {name!r} is not a plain folder name; a run's name is one folder in "
                         f"{shown(runs_dir())}: letters, digits, '_', '-' and '.' (not first), no '/' or '..'")


def other_data(saved: dict | None, now: dict) -> str | None:
    """Why a run whose checkpoint records `saved` (data_fingerprint) was not trained on `now`; None if it was."""
    if saved is None:
        return "does not record the data it was trained on (saved by an earlier saae_lib)"
    if saved == now:
        return None
    def sizes(record):
        return "/".join(str(record[split]) for split in ("train", "validation", "test"))
    if sizes(saved) != sizes(now):
        return f"was trained on other data ({sizes(saved)} train/validation/test images, now {sizes(now)})"
    return f"was trained on other data (as many images, {sizes(now)}, but other images or labels)"


def shown(path: Path) -> str:
    """A path as the reader should see it: relative to the working folder when possible."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)
