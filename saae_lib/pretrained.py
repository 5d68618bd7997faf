"""Pretrained models: a folder holding a trained model's weights and a manifest that says what it is and how good.

A pretrained folder holds
  weights.pt     the model's state_dict only (floating tensors in float16, half the size; no optimizer state and no
                 random stream, so it can be used but not trained further), written with checkpoints.atomic_save;
                 without the submodules its class lists as `training_only` (the label-learning models'
                 discriminators), which a loaded model keeps in shape but refuses to run, in one line
  manifest.json  strict JSON: the recipe (every TrainConfig option except where it ran), the seed, the versions and
                 machine it was made with, its training time and history, its validation and test numbers, and each
                 file's size and SHA-256.
The numbers are measured on the model as loaded back from weights.pt (float16 weights read as float32), so a user who
loads the folder measures exactly the manifest's numbers on the same data (`data` in the manifest identifies it).

`export` writes a folder from a trainer, `verify` checks one, `load` makes a Trainer of one and `fetch` downloads one
into the cache (by default from pretrained/ at this version's tag in the book's repository, settings.REPOSITORY).
The hashes catch damage and changed files, not a forger who rewrites the manifest as well: fetch only from addresses
you trust. A model trained in smoke mode says so (`smoke` in the manifest, and the trainer `load`
returns carries it, like any smoke run).
"""

import contextlib
import hashlib
import http.client
import json
import os
import platform
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import asdict
from pathlib import Path

import torch

from . import __version__, evaluation, settings
from .checkpoints import (
    PLACEMENT_OPTIONS,
    RUN_NAME,
    UPGRADE,
    CheckpointError,
    DamagedCheckpoint,
    atomic_save,
    atomic_write,
    atomic_write_text,
    check_weights,
    data_fingerprint,
    left_behind,
    other_data,
    read_state,
    shown,
    sync_folder,
    valid_fingerprint,
)
from .data import file_digest
from .models import MODELS
from .training import CONFIG_FIELDS, ConfigError, TrainConfig, Trainer

MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.pt"
FORMAT = 1  # of the manifest; this version reads formats 1 to FORMAT
# The options that say what a model is (those that say where it trained are the loader's to choose).
RECIPE_OPTIONS = tuple(name for name in CONFIG_FIELDS if name not in PLACEMENT_OPTIONS)
MANIFEST_KEYS = ("format", "name", "model", "smoke", "recipe", "seed", "saae_lib_version", "git_commit", "git_dirty",
                 "machine", "training_seconds", "training_note", "data", "history", "validation", "test", "files")
REBUILD = "download it again, or rebuild it with make pretrained"
# A manifest is a few kilobytes (its history: about 200 bytes an epoch); anything far larger is not one.
MANIFEST_LIMIT = 8 << 20
CHUNK = 1 << 20  # bytes read at a time when downloading
DEFAULT_TIMEOUT_S = 30.0  # seconds without an answer before a download gives up


class PretrainedError(CheckpointError):
    """A pretrained folder (or download) that is missing, damaged or changed: one line naming the file and what to
    do. A CheckpointError, so everything that reports a bad checkpoint reports it too."""


def is_pretrained(folder: str | os.PathLike) -> bool:
    """`folder` is meant as a pretrained folder (it has a manifest): `verify` says whether it is a sound one."""
    return (Path(folder) / MANIFEST_NAME).is_file()


# -- export ----------------------------------------------------------------------------------------------------
def export(trainer: Trainer, folder: str | os.PathLike, *, training_seconds: float, name: str | None = None,
           training_note: str | None = None) -> Path:
    """Write the trainer's model as a pretrained folder (weights.pt, then manifest.json, each atomically).

    training_seconds: what training it took (make pretrained passes the sum of its epochs' times); training_note:
    how that time was measured, if that matters (e.g. several models trained side by side). The validation and test
    numbers are measured on the model loaded back from the float16 weights, with the trainer's data and device. Any
    manifest already there is removed first, so a folder cut short by a crash is no pretrained folder at all.
    """
    folder = Path(folder)
    name = folder.name if name is None else name
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise PretrainedError(f"{name!r} is not a plain name for a pretrained model: use letters, digits, '_', '-' "
                              "and '.' (not first)")
    if not trainer.history:
        raise PretrainedError("this model has not been trained yet (its history is empty): fit it before exporting")
    check_export_folder(folder)
    weights = half_weights(trainer.model)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    atomic_save(weights, folder / WEIGHTS_NAME)
    try:
        recipe = recipe_of(trainer.config)
        smoke = trainer.smoke or settings.smoke_mode()
        loaded = rebuild(folder, recipe, trainer.history, smoke, trainer.data, str(trainer.device))
        validation = evaluation.validation_metrics(loaded) if len(loaded.data.val_images) else {}
        manifest = {
            "format": FORMAT, "name": name, "model": trainer.config.model, "smoke": smoke, "recipe": recipe,
            "seed": trainer.config.seed, "saae_lib_version": __version__, **git_state(),
            "machine": machine(trainer), "training_seconds": float(training_seconds), "training_note": training_note,
            "data": data_fingerprint(loaded.data), "history": trainer.history, "validation": validation,
            "test": evaluation.test_metrics(loaded), "files": {WEIGHTS_NAME: file_entry(folder / WEIGHTS_NAME)},
        }
        try:
            text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
        except (ValueError, TypeError) as error:
            raise PretrainedError(f"the model's numbers cannot be written as strict JSON ({error}): a diverged run "
                                  "is no pretrained model; train it again") from None
    except BaseException:
        (folder / WEIGHTS_NAME).unlink(missing_ok=True)  # no weights left without the manifest that vouches for them
        raise
    atomic_write_text(text, folder / MANIFEST_NAME)
    return folder


def check_export_folder(folder: Path) -> None:
    """A pretrained folder holds nothing else: export into a new or empty folder, or over a pretrained one."""
    if folder.exists() and not folder.is_dir():
        raise PretrainedError(f"{folder} is a file: export into a folder")
    if not folder.is_dir():
        return
    ours = (MANIFEST_NAME, WEIGHTS_NAME)
    foreign = sorted(entry for entry in os.listdir(folder)
                     if entry not in ours and not any(entry.startswith(f".{own}.") for own in ours))
    if foreign:
        listed = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise PretrainedError(f"{folder} holds other files ({listed}): a pretrained folder holds only {WEIGHTS_NAME} "
                              f"and {MANIFEST_NAME}; export into a new or empty folder")


def half_weights(model: torch.nn.Module) -> dict:
    """The model's state_dict on the CPU without its training-only submodules, floating tensors in float16 (integer
    ones, e.g. batch counts, as they are)."""
    weights = {}
    for key, value in model.state_dict().items():
        if key.split(".", 1)[0] in model.training_only:
            continue
        value = value.detach().to("cpu")
        if value.is_floating_point():
            if not torch.isfinite(value).all():
                raise PretrainedError(f"the model's {key} is not finite: a diverged run is no pretrained model; train "
                                      "it again")
            value = value.half()
            if not torch.isfinite(value).all():
                raise PretrainedError(f"the model's {key} holds values beyond float16's range (65504): it cannot be "
                                      "shipped in float16")
        weights[key] = value.clone()
    return weights


def recipe_of(config: TrainConfig) -> dict:
    """A resolved config's options as the manifest holds them (JSON values: layer widths as lists)."""
    return json.loads(json.dumps({key: value for key, value in asdict(config).items() if key in RECIPE_OPTIONS}))


def git_state() -> dict:
    """The git commit of the library's source and whether it had uncommitted changes; None for either where that is
    unknown (an installed package, no git)."""
    source = Path(__file__).resolve().parent

    def git(*words):
        result = subprocess.run(["git", "-C", str(source), *words], capture_output=True, text=True, timeout=30,
                                check=True)
        return result.stdout.strip()

    try:
        commit = git("rev-parse", "HEAD") or None
    except (OSError, subprocess.SubprocessError):
        return {"git_commit": None, "git_dirty": None}
    try:
        dirty = bool(git("status", "--porcelain", "--", "."))
    except (OSError, subprocess.SubprocessError):
        dirty = None
    return {"git_commit": commit, "git_dirty": dirty}


def cpu_name() -> str | None:
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or None


def machine(trainer: Trainer) -> dict:
    """Where it was made: what explains its speed, and the small differences of its numbers on other hardware."""
    device = trainer.device
    return {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu": cpu_name(), "cpu_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "device": str(device),
            "bf16": trainer.use_bf16, "cuda_graph": trainer.use_cuda_graph}


def file_entry(path: Path) -> dict:
    return {"sha256": file_digest(path, "sha256"), "bytes": path.stat().st_size}


# -- verify ----------------------------------------------------------------------------------------------------
def parse_manifest(raw: bytes, where: str, advice: str) -> dict:
    """The manifest in `raw` (read from `where`), checked as strict JSON of the right form; else PretrainedError
    ending in `advice`."""
    def refuse(constant):
        raise ValueError(f"{constant} is not a number strict JSON allows")

    if len(raw) > MANIFEST_LIMIT:
        raise PretrainedError(f"{where} has {len(raw):,} bytes, far more than a manifest: it is not one; {advice}")
    try:
        manifest = json.loads(raw.decode("utf-8"), parse_constant=refuse)
    except (UnicodeDecodeError, ValueError) as error:
        raise PretrainedError(f"{where} is not strict JSON ({error}); {advice}") from None
    if not isinstance(manifest, dict):
        raise PretrainedError(f"{where} is not a pretrained model's manifest (not a JSON object); {advice}")
    version = manifest.get("format")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise PretrainedError(f"{where} is not a pretrained model's manifest (its format is {version!r}); {advice}")
    if version > FORMAT:
        raise PretrainedError(f"{where} was written by a newer saae_lib (pretrained format {version}; this version "
                              f"reads up to {FORMAT}): {UPGRADE}")
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise PretrainedError(f"{where} is not a pretrained model's manifest (it lacks {', '.join(missing)}); "
                              f"{advice}")
    problem = malformed(manifest)
    if problem:
        raise PretrainedError(f"{where} is damaged ({problem}); {advice}")
    return manifest


def malformed(manifest: dict) -> str | None:
    """What is wrong with the form of a manifest's entries, if anything."""
    if not isinstance(manifest["name"], str) or not RUN_NAME.fullmatch(manifest["name"]):
        return "its name is not a plain name"
    files = manifest["files"]
    if not isinstance(files, dict) or WEIGHTS_NAME not in files:
        return f"its files do not list {WEIGHTS_NAME}"
    for file_name, entry in files.items():
        if not RUN_NAME.fullmatch(file_name) or file_name == MANIFEST_NAME:
            return f"it lists {file_name!r}, which is not a plain file name"
        digest, size = (entry.get("sha256"), entry.get("bytes")) if isinstance(entry, dict) else (None, None)
        if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
            return f"its SHA-256 of {file_name} is malformed"
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            return f"its size of {file_name} is malformed"
    if not isinstance(manifest["recipe"], dict) or manifest["recipe"].get("model") != manifest["model"]:
        return "its recipe is not one of its model"
    if manifest["recipe"].get("seed") != manifest["seed"]:
        return "its seed is not its recipe's"
    if not isinstance(manifest["history"], list) or not all(isinstance(r, dict) for r in manifest["history"]):
        return "its history is not a list of per-epoch records"
    if not isinstance(manifest["smoke"], bool):
        return "its smoke mark is not true or false"
    if not (isinstance(manifest["validation"], dict) and isinstance(manifest["test"], dict)):
        return "its numbers are not tables"
    return None


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of a pretrained folder, checked for form only (`verify` checks its files too)."""
    path = Path(folder) / MANIFEST_NAME
    try:
        size = path.stat().st_size
        if size > MANIFEST_LIMIT:
            raise PretrainedError(f"{path} has {size:,} bytes, far more than a manifest: it is not one; {REBUILD}")
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PretrainedError(f"{folder} is not a pretrained model folder (it has no {MANIFEST_NAME}); {REBUILD}") \
            from None
    except OSError as error:
        raise PretrainedError(f"cannot read {path}: {error.strerror or error}; check the path and its "
                              "permissions") from None
    return parse_manifest(raw, str(path), REBUILD)


def verify(folder: str | os.PathLike) -> dict:
    """The manifest of the pretrained folder, after checking the size and SHA-256 of every file it lists; a missing,
    resized or changed file is a PretrainedError naming it."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for file_name, entry in manifest["files"].items():
        check_file(folder / file_name, entry, REBUILD)
    return manifest


def check_file(path: Path, entry: dict, advice: str) -> None:
    try:
        size = path.stat().st_size
        if size != entry["bytes"]:
            raise PretrainedError(f"{path} has {size:,} bytes, its manifest says {entry['bytes']:,}: it was cut short "
                                  f"or changed; {advice}")
        digest = file_digest(path, "sha256")
    except FileNotFoundError:
        raise PretrainedError(f"{path} is missing ({MANIFEST_NAME} lists it); {advice}") from None
    except OSError as error:
        raise PretrainedError(f"cannot read {path}: {error.strerror or error}; check its permissions") from None
    if digest != entry["sha256"]:
        raise PretrainedError(f"{path} does not match its manifest (SHA-256 {digest[:12]}..., the manifest says "
                              f"{entry['sha256'][:12]}...): it was changed or damaged; {advice}")


# -- load ------------------------------------------------------------------------------------------------------
def load(folder: str | os.PathLike, data=None, device: str | None = None) -> Trainer:
    """The pretrained model in `folder` as a Trainer (verified first): its recipe, fresh optimizers, its float16
    weights read as float32 and its history; `trainer.pretrained` is its manifest. `data`: the MNIST to use (default:
    loaded from disk); `device`: where to put it (default: the best one here)."""
    folder = Path(folder)
    return loaded(folder, verify(folder), data, device)


def loaded(folder: Path, manifest: dict, data, device: str | None) -> Trainer:
    """The Trainer of a pretrained folder whose manifest `verify` has just returned."""
    trainer = rebuild(folder, manifest["recipe"], manifest["history"], manifest["smoke"], data, device)
    trainer.pretrained = manifest
    return trainer


def rebuild(folder: Path, recipe: dict, history: list, smoke: bool, data, device: str | None) -> Trainer:
    """A Trainer of `recipe` with the weights of folder/weights.pt (checked against its model first) and `history`."""
    manifest_path = folder / MANIFEST_NAME
    unknown = sorted(map(str, set(recipe) - set(RECIPE_OPTIONS)))
    if unknown:
        raise PretrainedError(f"{manifest_path} was written by another version of saae_lib (unknown options: "
                              f"{', '.join(unknown)}): {UPGRADE}, or rebuild it with make pretrained")
    missing = [option for option in RECIPE_OPTIONS if option not in recipe]
    if missing:
        raise PretrainedError(f"{manifest_path} is damaged (its recipe lacks {', '.join(missing)}); {REBUILD}")
    try:
        config = TrainConfig(**recipe, device=device or "auto").resolved()
    except (ConfigError, TypeError) as error:
        raise PretrainedError(f"{manifest_path} holds an invalid recipe ({error}); {REBUILD}") from None
    weights = read_weights(folder / WEIGHTS_NAME, config)
    trainer = Trainer(config, data)
    # read_weights checked every key: what is missing is whole training-only submodules, and nothing is unexpected
    missing = trainer.model.load_state_dict({key: value.float() if value.is_floating_point() else value
                                             for key, value in weights.items()}, strict=False).missing_keys
    for name in sorted({key.split(".", 1)[0] for key in missing}):
        getattr(trainer.model, name).register_forward_pre_hook(refuse_left_out(folder, name))
    trainer.history = [dict(record) for record in history]
    trainer.smoke = trainer.smoke or smoke
    return trainer


def refuse_left_out(folder: Path, name: str):
    """A forward pre-hook for a training-only submodule that `folder` does not ship: calling it is one line."""
    def refuse(module, inputs):
        raise PretrainedError(f"{folder} ships the model without its {name}, which only training uses: train the "
                              "model (python -m saae_lib train, or train_or_load with train=True) to have one")
    return refuse


def read_weights(path: Path, config: TrainConfig) -> dict:
    """The table of tensors in `path`, checked as an archive and against the model `config` describes (whose
    training-only submodules it may leave out)."""
    try:
        weights = read_state(path, keys=(), what="a pretrained model's weights", advice=REBUILD)
        check_weights({"model": weights}, asdict(config), path, optional=MODELS[config.model].training_only)
    except DamagedCheckpoint as error:
        raise PretrainedError(f"{path} is damaged or not the {config.model} model its manifest describes "
                              f"({error.reason}); {REBUILD}") from None
    except CheckpointError as error:
        raise PretrainedError(str(error)) from None
    return weights


# -- fetch -----------------------------------------------------------------------------------------------------
def cache_folder(name: str) -> Path:
    """Where `fetch` keeps the pretrained model `name`: one folder per saae_lib version (a newer version may ship
    other models under the same name)."""
    return settings.cache_dir() / "pretrained" / __version__ / name


def default_base_url(repository: str = settings.REPOSITORY, version: str = __version__) -> str:
    """Where `fetch` downloads from unless told otherwise: the raw files of pretrained/ at the tag v{version} of the
    GitHub repository `repository` (the tag, not a branch, so a version always gets the models made for it)."""
    address = urllib.parse.urlsplit(repository.strip())
    parts = [part for part in address.path.split("/") if part]
    if address.scheme != "https" or address.netloc.lower() != "github.com" or len(parts) != 2:
        raise PretrainedError(f"the book's repository {repository!r} is not https://github.com/OWNER/NAME, so there is "
                              "no default address for pretrained models: pass base_url")
    owner, repo = parts[0], parts[1].removesuffix(".git")
    return f"https://raw.githubusercontent.com/{owner}/{repo}/v{version}/pretrained"


def fetch(name: str, *, base_url: str | None = None, cache: str | os.PathLike | None = None,
          timeout: float = DEFAULT_TIMEOUT_S) -> Path:
    """Download the pretrained model `name` from {base_url}/{name}/ into `cache` (default: cache_folder(name)) and
    return that folder, verified. A folder already there that verifies is used as it is, without the network.
    base_url defaults to default_base_url(): pretrained/ at this version's tag in the book's repository.

    Files are downloaded into a hidden folder beside `cache` and checked against the manifest's sizes and SHA-256s;
    only then are they moved in, the manifest last, so nothing half-downloaded ever looks like a pretrained folder.
    Any failure (network, HTTP, timeout, a file that does not match) is one PretrainedError line.
    """
    if not isinstance(name, str) or not RUN_NAME.fullmatch(name):
        raise PretrainedError(f"{name!r} is not a pretrained model's name (a plain name: letters, digits, '_', '-', "
                              "'.')")
    folder = Path(cache) if cache is not None else cache_folder(name)
    if is_pretrained(folder):
        with contextlib.suppress(PretrainedError):  # damaged or changed: downloaded again below
            verify(folder)
            return folder
    if folder.exists() and not folder.is_dir():
        raise PretrainedError(f"{folder} is a file, where the pretrained model {name!r} would go: move it away or "
                              "choose another cache folder")
    if base_url is None:
        base_url = default_base_url()
    base = f"{base_url.rstrip('/')}/{urllib.parse.quote(name)}"
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_downloads(folder)
        staging = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.{os.getpid()}-", suffix=DOWNLOAD))
    except OSError as error:
        raise PretrainedError(f"cannot write into {folder.parent} ({error.strerror or error}): choose another cache "
                              "folder (SAAE_CACHE_DIR) or fix its permissions") from None
    try:
        manifest_url = f"{base}/{MANIFEST_NAME}"
        raw = bytearray()
        download(manifest_url, timeout, MANIFEST_LIMIT, raw.extend)
        manifest = parse_manifest(bytes(raw), manifest_url, "check the name and base_url, or fetch again later")
        for file_name, entry in manifest["files"].items():
            download_file(f"{base}/{urllib.parse.quote(file_name)}", staging / file_name, entry, timeout)
        install(staging, folder, manifest["files"], bytes(raw))
    except OSError as error:
        raise PretrainedError(f"cannot write the download into {folder} ({error.strerror or error}): free some space "
                              "or fix the cache folder's permissions, then fetch again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # our own folder: what is left in it is half a download
    return folder


DOWNLOAD = ".download"  # the suffix of fetch's staging folders
MISMATCH = "the server's copy does not match its manifest; fetch again later, or tell whoever publishes it"


def download_file(url: str, path: Path, entry: dict, timeout: float) -> None:
    """Download `url` into `path`, refused unless it has the size and SHA-256 of its manifest `entry`."""
    digest = hashlib.sha256()
    with open(path, "wb") as file:
        def write(chunk):
            digest.update(chunk)
            file.write(chunk)

        received = download(url, timeout, entry["bytes"], write)
        file.flush()
        os.fsync(file.fileno())
    if received != entry["bytes"]:
        raise PretrainedError(f"{url} sent {received:,} bytes, its manifest says {entry['bytes']:,}: {MISMATCH}")
    if digest.hexdigest() != entry["sha256"]:
        raise PretrainedError(f"{url} does not match its manifest (SHA-256 {digest.hexdigest()[:12]}..., the manifest "
                              f"says {entry['sha256'][:12]}...): {MISMATCH}")


def download(url: str, timeout: float, limit: int, write) -> int:
    """Pass the body at `url` to write(chunk), refused past `limit` bytes; returns its size. Every failure is a
    PretrainedError line."""
    again = "check your network connection and base_url, then fetch again"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            received = 0
            while chunk := response.read(CHUNK):
                received += len(chunk)
                if received > limit:
                    raise PretrainedError(f"{url} sends more than the {limit:,} bytes expected: {MISMATCH}")
                write(chunk)
            return received
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise PretrainedError(f"{url} is not there (HTTP 404): check the model's name and base_url") from None
        raise PretrainedError(f"{url} answered HTTP {error.code} ({error.reason}): fetch again later, or check "
                              "base_url") from None
    except TimeoutError:
        raise PretrainedError(f"{url} did not answer within {timeout:g} s: {again}") from None
    except urllib.error.URLError as error:
        if isinstance(error.reason, TimeoutError):
            raise PretrainedError(f"{url} did not answer within {timeout:g} s: {again}") from None
        reason = getattr(error.reason, "strerror", None) or error.reason
        raise PretrainedError(f"cannot reach {url} ({reason}): {again}") from None
    except (http.client.HTTPException, ConnectionError) as error:  # cut off halfway
        raise PretrainedError(f"the download of {url} broke off ({type(error).__name__}): {again}") from None
    except ValueError as error:  # not an address urllib can open
        raise PretrainedError(f"{url} is not an address to download from ({error}): check base_url") from None


def install(staging: Path, folder: Path, files: dict, manifest: bytes) -> None:
    """Move the verified files from `staging` into `folder`: any old manifest goes first and the new one (as it was
    downloaded) comes last, so the folder is never a pretrained folder with files of two versions."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).unlink(missing_ok=True)
    for file_name in files:
        os.replace(staging / file_name, folder / file_name)
    sync_folder(folder)
    atomic_write(folder / MANIFEST_NAME, lambda file: file.write(manifest))


def remove_stale_downloads(folder: Path) -> None:
    """Remove the staging folders of `folder` that killed fetches left behind (their process is gone)."""
    prefix = f".{folder.name}."
    with contextlib.suppress(OSError):
        for entry in os.listdir(folder.parent):
            if not (entry.startswith(prefix) and entry.endswith(DOWNLOAD)):
                continue
            pid = entry[len(prefix):].split("-", 1)[0]
            leftover = folder.parent / entry
            with contextlib.suppress(OSError):
                if pid.isdigit() and left_behind(leftover, int(pid)):
                    shutil.rmtree(leftover, ignore_errors=True)


# -- standing in for a run (train_or_load's pretrained=) --------------------------------------------------------
# This checkout's copy of the shipped models: pretrained/ beside the package, when saae_lib runs from the repository
# (its REGISTRY.json tells it from any other folder of that name beside an installed package, which fetches instead).
CHECKOUT = Path(__file__).resolve().parent.parent / "pretrained"
REGISTRY_NAME = "REGISTRY.json"
COLAB_HINT = ("in Colab, set SAAE_CACHE_DIR to a folder of your mounted Google Drive (e.g. "
              "/content/drive/MyDrive/saae_cache) to keep it between sessions")
# What the recipe line leaves out (said before it) and what the number lines leave out (not measurements).
SUMMARY_SKIPS = ("model", "recipe", "epochs", "seed")
NOT_NUMBERS = ("model", "epochs", "seconds_per_epoch", "smoke", "n_labels", "n_clusters")


class NotStandIn(PretrainedError):
    """Why a pretrained model cannot stand for a run: one line, without what is done instead. `data`: the MNIST
    loaded on the way, if any (training can use it)."""

    def __init__(self, message: str, data=None):
        super().__init__(message)
        self.data = data


def checkout_folder(name: str) -> Path | None:
    """This checkout's pretrained/NAME, if saae_lib runs from the repository and it holds that model."""
    folder = CHECKOUT / name
    return folder if (CHECKOUT / REGISTRY_NAME).is_file() and is_pretrained(folder) else None


def locate(name: str) -> tuple[Path, dict, str]:
    """(folder, verified manifest, where it comes from) of the pretrained model `name`: this checkout's
    pretrained/NAME, else the cache, downloaded into it by `fetch` if need be (saying where, and how to keep it in
    Colab). PretrainedError, one line, if neither has it sound."""
    folder = checkout_folder(name)
    if folder is not None:
        return folder, verify(folder), "this checkout"
    cache = cache_folder(name)
    if is_pretrained(cache):
        with contextlib.suppress(PretrainedError):  # damaged or changed: fetch downloads it again
            return cache, verify(cache), "the cache"
    folder = fetch(name, timeout=DEFAULT_TIMEOUT_S)
    manifest = verify(folder)
    size = sum(entry["bytes"] for entry in manifest["files"].values())
    print(f"downloaded the pretrained model {name!r} ({size / 1e6:.1f} MB) into {folder}" if size >= 1e5 else
          f"downloaded the pretrained model {name!r} ({size / 1e3:.0f} kB) into {folder}")
    if not os.environ.get("SAAE_CACHE_DIR"):
        print(COLAB_HINT)
    return folder, manifest, "downloaded"


def value_text(value) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        value = tuple(value)
    return f"{value:.4g}" if isinstance(value, float) else repr(value)


def recipe_differences(recipe: dict, wanted: TrainConfig) -> list[str]:
    """How the manifest's `recipe` differs from the run `wanted` (a resolved config), up to where it trains and the
    name of the recipe that gave its values; empty if it is that run."""
    expected = recipe_of(wanted)
    differences = [f"{key} {value_text(recipe[key]) if key in recipe else 'not recorded'}, this run "
                   f"{value_text(expected[key])}" for key in RECIPE_OPTIONS
                   if key != "recipe" and recipe.get(key, expected) != expected[key]]
    differences += [f"{key}, an option this saae_lib does not know" for key in recipe if key not in RECIPE_OPTIONS]
    return differences


def shipped_config(options: dict, smoke: bool | None = None) -> TrainConfig:
    """The resolved config a shipped model must have been trained with to stand for a run with `options`: those
    options under the full recipe (the shipped models' recipe, whatever `recipe` the run asks). ConfigError or
    TypeError for options that make no run."""
    return TrainConfig(**{**options, "recipe": "full"}).resolved(smoke=smoke)


def stand_in(name: str, run: str, options: dict, data=None) -> Trainer:
    """The pretrained model `name` as the trainer of train_or_load's run `run` (its `options`), printing what it is;
    NotStandIn, one line, if there is none or it is not that run.

    It stands for the run only if its manifest's recipe equals the run's options resolved with the full recipe (the
    shipped models' recipe, whatever `recipe` the run asks), the seed included, up to where it trains (device,
    cuda_graph); it must also be a smoke model exactly when this is a smoke run, and have been trained on the run's
    data (`data`, default: MNIST from disk)."""
    try:
        wanted = shipped_config(options)
    except (ConfigError, TypeError) as error:
        raise NotStandIn(f"this run has no full recipe to compare the pretrained model {name!r} with ({error})") \
            from None
    folder, manifest, source = locate(name)
    where = shown(folder)
    smoke = settings.smoke_mode()
    if manifest["smoke"] != smoke:
        raise NotStandIn(f"{where} is a smoke-mode model and this is a real run" if manifest["smoke"] else
                         f"{where} is a real model and this is a smoke run (SAAE_FAST=1)")
    differences = recipe_differences(manifest["recipe"], wanted)
    if differences:
        shown_differences = "; ".join(differences[:3]) + (f"; and {len(differences) - 3} more" if len(differences) > 3
                                                          else "")
        raise NotStandIn(f"{where} was trained with other settings ({shown_differences})")
    trainer = loaded(folder, manifest, data, wanted.device)
    recorded = manifest["data"]
    problem = (other_data(recorded, data_fingerprint(trainer.data)) if valid_fingerprint(recorded)
               else "does not record the data it was trained on in a form this saae_lib reads")
    if problem is not None:
        raise NotStandIn(f"{where} {problem}", trainer.data)
    print(f"loaded {run!r} from the pretrained model {name!r} ({where}, {source}): trained elsewhere, not here")
    for line in summary(manifest):
        print(f"  {line}")
    return trainer


def summary(manifest: dict) -> list[str]:
    """What a pretrained model is, from its manifest, one line each: its recipe in short, its training, its
    validation and test numbers (and the smoke note of a smoke model)."""
    recipe = manifest["recipe"]
    epochs = recipe.get("epochs")
    lines = [f"recipe: {manifest['model']}, {recipe.get('recipe')} recipe, {epochs} epoch{'' if epochs == 1 else 's'}"
             f", seed {manifest['seed']}{recipe_changes(recipe)}",
             f"trained in {duration(manifest['training_seconds'])} on {machine_text(manifest['machine'])}, saae_lib "
             f"{manifest['saae_lib_version']}" + (f" ({manifest['training_note']})" if manifest["training_note"]
                                                   else ""),
             f"validation: {numbers_text(manifest['validation'])}",
             f"test: {numbers_text(manifest['test'])}"]
    if manifest["smoke"]:
        lines.append(settings.SMOKE_NOTE)
    return lines


def recipe_changes(recipe: dict) -> str:
    """The options of `recipe` that differ from its model's defaults under its recipe, as ', other than the
    defaults: ...' (empty if none, or if they cannot be told)."""
    try:
        defaults = recipe_of(TrainConfig(model=recipe["model"], recipe=recipe["recipe"]).resolved(smoke=False))
    except (ConfigError, TypeError, KeyError):
        return ""
    changed = [f"{key} {value_text(value)}" for key, value in recipe.items()
               if key not in SUMMARY_SKIPS and key in defaults and value != defaults[key]]
    return f"; other than the defaults: {', '.join(changed)}" if changed else "; the model's defaults otherwise"


def duration(seconds) -> str:
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not seconds >= 0:
        return "an unrecorded time"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


def machine_text(machine) -> str:
    if not isinstance(machine, dict):
        return "an unrecorded machine"
    device = machine.get("device")
    precision = {True: "bf16", False: "fp32"}.get(machine.get("bf16"))
    details = ", ".join(str(part) for part in (device, precision) if part)
    name = machine.get("gpu") or machine.get("cpu") or "an unrecorded machine"
    return f"{name} ({details})" if details else str(name)


def numbers_text(numbers: dict) -> str:
    shown_numbers = [f"{key} {value_text(value)}" for key, value in numbers.items()
                     if key not in NOT_NUMBERS and value is not None]
    return ", ".join(shown_numbers) or "none recorded"
