"""Command line: python -m saae_lib {train,evaluate,sample,predict,encode} ... (see --help of each).

Every failure ends in one line on stderr that says what to do, never a traceback: exit 2 for a bad command line,
1 for a fault met while running (data, checkpoint, disk), 130 for Ctrl-C. Nothing trained is lost on the way:
a checkpoint is written after every epoch, and `--force` trains beside the old run and replaces it only at the end.
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import evaluation, settings
from .checkpoints import (
    CHECKPOINT_NAME,
    PLACEMENT_OPTIONS,
    CheckpointError,
    atomic_write,
    atomic_write_text,
    load_checkpoint,
    read_checkpoint,
    restore,
    save_checkpoint,
)
from .data import DataError
from .models import MODELS
from .priors import PRIORS
from .training import CUDA_GRAPH_MODES, DEFAULTS, LR_SCHEDULES, PRECISIONS, ConfigError, TrainConfig, Trainer

METRICS_NAME = "metrics.json"
SAMPLE_CHUNK = 10_000  # images decoded at a time by `sample`
IMAGE_BYTES = 28 * 28 + 8  # one sampled image (uint8) and its label (int64) in memory


class Usage(Exception):
    """A command line that cannot work: reported like argparse's own errors (exit 2)."""


def users(capability: str) -> str:
    """The models that have a capability (a method such as `generate`, or label_classes > 0)."""
    return ", ".join(kind for kind, model in MODELS.items() if getattr(model, capability, None))


# -- train ------------------------------------------------------------------------------------------------------
# TrainConfig options on the command line: option -> (flag, argparse keywords). `model` is the positional argument.
FLAGS = {
    "epochs": ("--epochs", dict(type=int, help="epochs in total (default: the model's)")),
    "batch_size": ("--batch-size", dict(type=int)),
    "latent_dim": ("--latent-dim", dict(type=int, help="size of the code z")),
    "hidden": ("--hidden", dict(type=int, nargs="+", help="widths of the hidden layers (default: 1000 1000)")),
    "lr": ("--lr", dict(type=float, help="learning rate of the reconstruction and classification phases")),
    "lr_schedule": ("--lr-schedule", dict(choices=LR_SCHEDULES, help="constant, or cosine: every learning rate "
                                          "decays to ~0 over the run's epochs (default: the model's)")),
    "adversarial_lr": ("--adversarial-lr", dict(type=float, help="learning rate of the adversarial phases")),
    "prior": ("--prior", dict(choices=sorted(PRIORS), help="prior on z (default gaussian)")),
    "prior_std": ("--prior-std", dict(type=float, help="standard deviation of a Gaussian prior (default 1)")),
    "label_aware": ("--label-aware", dict(action="store_const", const=True,
                                          help="the discriminator also sees the label, D(z, y)")),
    "n_labels": ("--labels", dict(type=int, help="labeled training images (a multiple of 10)")),
    "n_clusters": ("--clusters", dict(type=int, help="number of clusters")),
    "input_noise": ("--input-noise", dict(type=float, help="std of Gaussian noise on the encoder's inputs")),
    "balance": ("--balance", dict(type=float, help="weight of the batch balance term")),
    "batch_norm": ("--batch-norm", dict(action=argparse.BooleanOptionalAction,
                                        help="batch norm in the encoder's hidden layers (default: the model's)")),
    "validation_size": ("--validation-size", dict(type=int, help="training images held out for validation "
                                                                 "(default 5000)")),
    "precision": ("--precision", dict(choices=PRECISIONS, help="auto (default): bf16 on CPUs that have it and "
                                      "on GPUs with the CUDA graph, else fp32")),
    "cuda_graph": ("--cuda-graph", dict(choices=CUDA_GRAPH_MODES, help="replay each training step as a CUDA graph: "
                                        "auto (default: on CUDA devices), on or off")),
    "seed": ("--seed", dict(type=int, help="random seed (default 0)")),
}


def flag_message(error: ConfigError) -> str:
    """A TrainConfig error in the command line's words (--labels for n_labels, ...)."""
    message = str(error)
    if error.option in FLAGS:
        message = message.replace(error.option, FLAGS[error.option][0], 1)
    return message


def given_options(args) -> dict:
    return {option: getattr(args, option) for option in FLAGS if getattr(args, option) is not None}


def check_folder(folder: Path) -> None:
    """--out must be a folder we can write, checked before any data is loaded or anything trained."""
    if folder.exists() and not folder.is_dir():
        raise Usage(f"--out {folder} is a file, not a folder: choose a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise Usage(f"--out {folder} cannot be written ({error.strerror or error}): choose another folder or fix "
                    "its permissions") from None


def resumed_trainer(args, out: Path) -> Trainer:
    """The run in `out`, to be continued: every option given must agree with the checkpoint."""
    if args.force:
        raise Usage("--resume continues the run in --out and --force replaces it: pass one of them")
    if not (out / CHECKPOINT_NAME).is_file():
        raise Usage(f"--resume: no {CHECKPOINT_NAME} in {out}; train a model there first")
    state, saved = read_checkpoint(out)
    if args.model != saved["model"]:
        raise Usage(f"--resume: {out} holds a run of the {saved['model']} model, not of {args.model}")
    for option, value in given_options(args).items():
        if option != "epochs" and option not in PLACEMENT_OPTIONS and not same_value(value, saved[option]):
            flag = FLAGS[option][0]
            raise Usage(f"--resume: {flag} {value} contradicts the run in {out} (it has {saved[option]}); leave "
                        f"{flag} out to continue that run, or start a new one with --force")
    done = len(state["history"])
    total = args.epochs if args.epochs is not None else saved["epochs"]
    if total <= done:
        raise Usage(f"--resume: {out} already has {done} epochs; ask for more with --epochs")
    check_folder(out)
    trainer = restore(state, saved, out / CHECKPOINT_NAME, device=args.device, cuda_graph=args.cuda_graph)
    trainer.config = replace(trainer.config, epochs=total)
    return trainer


def same_value(given, saved) -> bool:
    if isinstance(given, (list, tuple)) or isinstance(saved, (list, tuple)):
        return list(given or []) == list(saved or [])
    return given == saved


def replace_run(partial: Path, out: Path) -> None:
    """Put the finished run in `partial` in place of the one in `out` (other files in `out` stay)."""
    (out / METRICS_NAME).unlink(missing_ok=True)  # never an old model's metrics beside the new model
    os.replace(partial / CHECKPOINT_NAME, out / CHECKPOINT_NAME)
    os.replace(partial / METRICS_NAME, out / METRICS_NAME)
    shutil.rmtree(partial, ignore_errors=True)


def command_train(args) -> int:
    out = Path(args.out)
    if args.resume:
        trainer = resumed_trainer(args, out)
        target = out
    else:
        if (out / CHECKPOINT_NAME).is_file() and not args.force:
            raise Usage(f"{out} already holds a trained model: pass --force to replace it, or --resume to continue "
                        "it")
        try:
            config = TrainConfig(model=args.model, device=args.device or "auto", **given_options(args)).resolved()
        except ConfigError as error:
            raise Usage(flag_message(error)) from None
        check_folder(out)
        target = out
        if (out / CHECKPOINT_NAME).is_file():  # --force: train beside the old run, replace it at the end
            target = out.parent / f"{out.name}.partial"
            shutil.rmtree(target, ignore_errors=True)
            check_folder(target)
        try:
            trainer = Trainer(config)
        except ConfigError as error:  # e.g. bf16 where it is not supported
            raise Usage(flag_message(error)) from None
    total = trainer.config.epochs
    print_smoke_note(trainer)
    print(f"training {trainer.config.model} on {trainer.device} ({'bf16' if trainer.use_bf16 else 'fp32'}), "
          f"{len(trainer.data.train_images)} images", flush=True)

    def report(trainer, record):
        save_checkpoint(trainer, target)  # every epoch, so that an interrupted run can --resume
        losses = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in {"epoch", "seconds"})
        print(f"epoch {record['epoch']}/{total}: {record['seconds']:.1f} s  {losses}", flush=True)

    try:
        trainer.fit(epochs=total, callback=report, progress=False)
        metrics = evaluation.test_metrics(trainer)
        atomic_write_text(json.dumps(metrics, indent=2) + "\n", target / METRICS_NAME)
    except KeyboardInterrupt:
        done = len(trainer.history)
        if target != out:
            kept = "nothing new was saved"
            if done:
                kept = f"the new run's {done} finished epoch{'s are' if done > 1 else ' is'} in {target}"
            print(f"interrupted: {out} is unchanged; {kept}", file=sys.stderr)
        elif done:
            print(f"interrupted: {out} holds {done} of {total} epochs; continue with: python -m saae_lib train "
                  f"{trainer.config.model} --out {out} --resume", file=sys.stderr)
        else:
            print("interrupted before the first epoch ended: nothing was saved", file=sys.stderr)
        return 130
    if target != out:
        replace_run(target, out)
    print(json.dumps(metrics))
    return 0


# -- commands on a trained run -------------------------------------------------------------------------------------
def open_run(args, capability: str | None = None, needs: str = "") -> Trainer:
    """The run in args.dir; with `capability`, refused unless its model has it (a command that `needs` it)."""
    if not (Path(args.dir) / CHECKPOINT_NAME).is_file():
        raise Usage(f"no {CHECKPOINT_NAME} in {args.dir}: train a model there first (python -m saae_lib train)")
    trainer = load_checkpoint(args.dir, device=args.device)
    if capability is not None and not getattr(trainer.model, capability, None):
        raise Usage(f"{args.command} needs {needs} ({users(capability)}); {args.dir} holds a "
                    f"{trainer.config.model} model")
    return trainer


def output_file(args, suffix: str) -> Path:
    """--out, checked before any work: the right suffix, not there already (unless --force), a writable folder."""
    out = Path(args.out)
    if out.suffix != suffix:
        raise Usage(f"--out must end in {suffix}, got {out}")
    if out.is_dir():
        raise Usage(f"--out {out} is a folder: name a {suffix} file")
    if out.exists() and not args.force:
        raise Usage(f"{out} exists; pass --force to overwrite it")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):
            pass
    except OSError as error:
        raise Usage(f"--out {out}: its folder cannot be written ({error.strerror or error})") from None
    return out


def smoke_arrays(trainer: Trainer) -> dict:
    return {"smoke": np.array(settings.SMOKE_NOTE)} if evaluation.is_smoke(trainer) else {}


def print_smoke_note(trainer: Trainer) -> None:
    if evaluation.is_smoke(trainer):
        print(settings.SMOKE_NOTE)


def command_evaluate(args) -> int:
    print(json.dumps(evaluation.test_metrics(open_run(args))))
    return 0


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), or None where unknown."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def command_sample(args) -> int:
    if args.n < 1:
        raise Usage("--n must be at least 1")
    memory = available_memory()
    if memory is not None and args.n * IMAGE_BYTES > 0.5 * memory:
        raise Usage(f"--n {args.n} needs {args.n * IMAGE_BYTES / 1e9:.1f} GB for the images, more than half of the "
                    f"{memory / 1e9:.1f} GB free here: ask for at most {int(0.5 * memory / IMAGE_BYTES):,}")
    out = output_file(args, ".npz")
    trainer = open_run(args, "generate", needs="a model with a decoder")
    model, kind = trainer.model, trainer.config.model
    if args.label is not None:
        if not model.label_classes:
            raise Usage(f"--label needs a model whose decoder takes a label ({users('label_classes')}); "
                        f"{args.dir} holds a {kind} model")
        if not 0 <= args.label < model.label_classes:
            raise Usage(f"--label must be in 0..{model.label_classes - 1}")
    generator = torch.Generator().manual_seed(args.seed)
    images = np.empty((args.n, 28, 28), dtype=np.uint8)
    labels = np.empty(args.n, dtype=np.int64) if model.label_classes else None
    model.eval()
    for start in range(0, args.n, SAMPLE_CHUNK):
        n = min(SAMPLE_CHUNK, args.n - start)
        wanted = None if args.label is None else torch.full((n,), args.label)
        decoded, used = model.generate(n, labels=wanted, generator=generator)
        pixels = (decoded.float().clamp(0, 1) * 255).round().to(torch.uint8)
        images[start : start + n] = pixels.reshape(n, 28, 28).cpu().numpy()
        if labels is not None:
            labels[start : start + n] = used.numpy()
    arrays = {"images": images, **({"labels": labels} if labels is not None else {}), **smoke_arrays(trainer)}
    atomic_write(out, lambda file: np.savez_compressed(file, **arrays))
    print_smoke_note(trainer)
    print(f"wrote {len(images)} images to {out}")
    return 0


def command_predict(args) -> int:
    out = output_file(args, ".npy")
    trainer = open_run(args, "classify", needs="a classifying model")
    predicted = evaluation.test_predictions(trainer)
    atomic_write(out, lambda file: np.save(file, predicted))
    print_smoke_note(trainer)
    print(f"wrote {len(predicted)} predictions to {out}")
    return 0


def command_encode(args) -> int:
    out = output_file(args, ".npz")
    trainer = open_run(args, "encode", needs="a model with a code")
    codes, labels = evaluation.test_codes(trainer)
    arrays = {"codes": codes, "labels": labels, **smoke_arrays(trainer)}
    atomic_write(out, lambda file: np.savez_compressed(file, **arrays))
    print_smoke_note(trainer)
    print(f"wrote the codes ({codes.shape[0]} x {codes.shape[1]}) of the test images to {out}")
    return 0


# -- argument parsing ------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m saae_lib", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    defaults = "; ".join(f"{m}: {', '.join(f'{k}={v}' for k, v in d.items())}" for m, d in DEFAULTS.items())
    uses = "; ".join(f"{kind}: {', '.join(FLAGS[o][0] for o in model.options)}" for kind, model in MODELS.items()
                     if model.options)

    train = commands.add_parser("train", help="train a model, write DIR/checkpoint.pt and DIR/metrics.json",
                                description=f"Train a model on MNIST. Defaults per model: {defaults}. Options that "
                                            f"only some models use: {uses}.")
    train.add_argument("model", choices=MODELS)
    train.add_argument("--out", required=True, help="output folder")
    for option, (flag, keywords) in FLAGS.items():
        train.add_argument(flag, dest=option, **keywords)
    train.add_argument("--device", help="auto (default), cpu, cuda or mps")
    train.add_argument("--resume", action="store_true", help="continue the run in --out (up to --epochs)")
    train.add_argument("--force", action="store_true", help="replace the run in --out (kept until the new one ends)")

    evaluate = commands.add_parser("evaluate", help="print a trained model's test metrics as JSON")
    sample = commands.add_parser("sample", help="decode N prior samples into images (.npz)")
    predict = commands.add_parser("predict", help="predicted digit of each test image (.npy)")
    encode = commands.add_parser("encode", help="codes of the test images (.npz: codes, labels)")
    for sub in (evaluate, sample, predict, encode):
        sub.add_argument("dir", help="folder with checkpoint.pt")
        sub.add_argument("--device", help="auto (default), cpu, cuda or mps")
    sample.add_argument("--n", type=int, required=True, help="number of images")
    sample.add_argument("--out", required=True, help="output .npz (arrays: images uint8 N x 28 x 28, labels)")
    sample.add_argument("--label", type=int, help="make every image this digit (or category)")
    sample.add_argument("--seed", type=seed, default=0)
    predict.add_argument("--out", required=True, help="output .npy with one int64 per test image")
    encode.add_argument("--out", required=True, help="output .npz: codes (10000 x d, float32; semi/cluster: the "
                                                     "style code z) and labels (10000, int64)")
    for sub in (sample, predict, encode):
        sub.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    return parser


def seed(text: str) -> int:
    value = int(text)
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**63), got {text}")
    return value


COMMANDS = {"train": command_train, "evaluate": command_evaluate, "sample": command_sample,
            "predict": command_predict, "encode": command_encode}


def describe(error: OSError) -> str:
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}; check the path, its permissions and the free disk space"


def main(argv=None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "device", None):
            try:
                settings.pick_device(args.device)
            except ValueError as error:
                raise Usage(str(error)) from None
        return COMMANDS[args.command](args)
    except Usage as error:
        parser.error(str(error))
    except ConfigError as error:  # a saved run that cannot run here as asked (e.g. --resume --cuda-graph on, no GPU)
        parser.error(flag_message(error))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (DataError, CheckpointError, FloatingPointError) as error:
        print(f"error: {error}", file=sys.stderr)
    except torch.cuda.OutOfMemoryError:
        print("error: out of GPU memory: lower --batch-size, or use --device cpu", file=sys.stderr)
    except MemoryError:
        print("error: out of memory: lower --batch-size or --hidden (train), or --n (sample)", file=sys.stderr)
    except RuntimeError as error:  # torch reports a failed allocation as a RuntimeError; anything else is a bug
        if "can't allocate memory" not in str(error):
            raise
        print("error: out of memory: lower --batch-size or --hidden (train), or --n (sample)", file=sys.stderr)
    except OSError as error:
        print(f"error: {describe(error)}", file=sys.stderr)
    return 1

