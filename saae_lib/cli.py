"""Command line: python -m saae_lib {train,evaluate,sample,predict,encode} ... (see --help of each).

Every failure ends in one line on stderr that says what to do, never a traceback: exit 2 for a bad command line,
1 for a fault met while running (data, checkpoint, disk, non-finite results), 130 for Ctrl-C (128 + the signal for
SIGTERM and SIGHUP). Nothing trained is lost on the way: a checkpoint is written after every epoch, one `train` at a
time writes a --out, `--force` trains beside the old run (OUT.partial) and replaces it only at the end, and
metrics.json is only ever beside the checkpoint it describes.
"""

import argparse
import contextlib
import errno
import json
import math
import os
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from . import evaluation, pretrained, settings
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
from .runs import (
    METRICS_NAME,
    RunFolderError,
    check_partial,
    command_line,
    find_partial,
    incoming,
    make_partial,
    metrics_describe,
    partial_owner,
    partial_place,
    plural,
    remove_partial,
    replace_run,
    run_lock,
    set_aside,
)
from .training import (
    DEFAULTS,
    OPTIONS,
    ConfigError,
    Option,
    TrainConfig,
    Trainer,
    defaults_of,
    machine_recipe,
    model_options,
)

SAMPLE_CHUNK = 10_000  # images decoded at a time by `sample`
IMAGE_BYTES = 28 * 28 + 8  # one sampled image (uint8) and its label (int64) in memory


class Usage(Exception):
    """A command line that cannot work: reported like argparse's own errors (exit 2)."""


def users(capability: str) -> str:
    """The models that have a capability (a method such as `generate`, or label_classes > 0)."""
    return ", ".join(kind for kind, model in MODELS.items() if getattr(model, capability, None))


# -- train ------------------------------------------------------------------------------------------------------
# TrainConfig options on the command line, each from its one declaration (training.TrainConfig): option -> (flag,
# argparse keywords). `model` is the positional argument, `--device` is shared with the other commands.
def flag_keywords(declared: Option) -> dict:
    """argparse keywords of an option: from its declared type, its check's choices and its help."""
    kind = declared.value_type
    if kind is bool:
        return dict(action=argparse.BooleanOptionalAction, help=declared.help)
    if kind is tuple:
        return dict(type=int, nargs="+", help=declared.help)
    if declared.check.choices:
        return dict(choices=declared.check.choices, help=declared.help)
    return dict(type=kind, help=declared.help)


FLAGS = {name: (declared.flag or "--" + name.replace("_", "-"), flag_keywords(declared))
         for name, declared in OPTIONS.items() if declared.cli}


def flag_message(error: ConfigError) -> str:
    """A TrainConfig error in the command line's words (--labels for n_labels, ...)."""
    message = str(error)
    if error.option in FLAGS:
        message = message.replace(error.option, FLAGS[error.option][0], 1)
    return message


def given_options(args) -> dict:
    return {option: getattr(args, option) for option in FLAGS if getattr(args, option) is not None}


def recipe_arguments(options: dict) -> list[str]:
    """The `train` flags that give these TrainConfig options (a recipe, a registry entry); None: left out."""
    words = []
    for option, (flag, _) in FLAGS.items():
        value = options.get(option)
        if value is None:
            continue
        if isinstance(value, bool):
            words.append(flag if value else "--no-" + flag.removeprefix("--"))
        elif isinstance(value, (list, tuple)):
            words += [flag, *map(str, value)]
        else:
            words += [flag, str(value)]
    return words


def pretrained_refusal(args, out: Path) -> str:
    """Why `train` never writes into a pretrained folder, and the command that trains its recipe instead."""
    try:
        manifest = pretrained.read_manifest(out)
        instead = command_line("train", manifest["model"], "--out", Path("runs") / manifest["name"],
                               *recipe_arguments(manifest["recipe"]))
    except pretrained.PretrainedError:
        instead = None
    if args.resume:
        what = (f"--resume: {out} holds a pretrained model: its weights only, no optimizer state or random stream, "
                "so it cannot be continued")
        return what + (f"; train a new run with its recipe instead (raise --epochs to train longer): {instead}"
                       if instead else "; train a new run into another folder instead")
    # --force would put a run beside the shipped model, and commands on the folder would still use the latter
    what = f"{out} holds a pretrained model: train never writes into one, even with --force"
    return what + (f"; train into another folder, e.g. with its recipe: {instead}" if instead
                   else "; train into another folder")


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


def out_folder(text: str) -> Path:
    """train's --out; an empty one would be the current folder, refused."""
    if not text.strip():
        raise Usage("--out is empty: name the folder to train into (e.g. --out runs/aae)")
    return Path(text)


def resumed_trainer(args, out: Path, source: Path) -> Trainer:
    """The run in `source` (`out`, or the unfinished --force run that replaces it) to be continued: every option
    given must agree with its checkpoint. A run with all its epochs but no metrics.json is continued too: it is only
    evaluated."""
    state, saved = read_checkpoint(source)
    if args.model != saved["model"]:
        raise Usage(f"--resume: {source} holds a run of the {saved['model']} model, not of {args.model}")
    for option, value in given_options(args).items():
        if option != "epochs" and option not in PLACEMENT_OPTIONS and not same_value(value, saved[option]):
            flag = FLAGS[option][0]
            raise Usage(f"--resume: {flag} {value} contradicts the run in {source} (it has {saved[option]}); leave "
                        f"{flag} out to continue that run, or start a new one with --force")
    done = len(state["history"])
    total = args.epochs if args.epochs is not None else saved["epochs"]
    if total < done or (total == done and source == out and metrics_describe(out, done)):
        raise Usage(f"--resume: {source} already has {done} epochs; ask for more with --epochs")
    trainer = restore(state, saved, source / CHECKPOINT_NAME, device=args.device, cuda_graph=args.cuda_graph)
    trainer.config = replace(trainer.config, epochs=total)
    return trainer


def same_value(given, saved) -> bool:
    if isinstance(given, (list, tuple)) or isinstance(saved, (list, tuple)):
        return list(given or []) == list(saved or [])
    return given == saved


# -- what a train command says after a fault -----------------------------------------------------------------------
class RunFault(Exception):
    """A fault met while training (disk, non-finite numbers): one line that says what is kept and what to do
    (exit 1)."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM or SIGHUP, handled as Ctrl-C is (exit status 128 + the signal's number)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def interrupted_word(error: KeyboardInterrupt) -> str:
    return f"interrupted ({signal.Signals(error.signum).name})" if isinstance(error, Interrupted) else "interrupted"


def interrupt_status(error: KeyboardInterrupt) -> int:
    return 128 + (error.signum if isinstance(error, Interrupted) else signal.SIGINT)


def raise_interrupted(signum, frame):
    raise Interrupted(signum)


@contextlib.contextmanager
def interrupt_signals():
    """SIGTERM and SIGHUP raise Interrupted (a KeyboardInterrupt) while a command runs; a signal ignored by whoever
    started it (nohup) stays ignored."""
    previous = {}
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        try:
            if signum is not None and signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, raise_interrupted)
        except (ValueError, OSError):  # not the main thread
            pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)


INTERRUPTS = ("SIGINT", "SIGTERM", "SIGHUP")  # what ends a command as Ctrl-C does


@contextlib.contextmanager
def interrupts_deferred():
    """Ctrl-C, SIGTERM and SIGHUP are noted, not acted on, inside the block, and acted on as soon as it ends: a
    signal inside torch.save's file writes would end the save with a broken file, one inside the move of a finished
    run would leave it half moved. A handler set by Python (Ctrl-C's KeyboardInterrupt, interrupt_signals') runs after
    the block; a signal's default action (ending the process, e.g. SIGHUP where nothing handles it) is taken after
    it, by sending the signal again; an ignored signal stays ignored. Blocking the signals with pthread_sigmask is not
    enough: another thread, e.g. one of torch's, can still take them. Outside the main thread no handler can be set,
    so nothing is deferred there; Python's handlers run in the main thread, never inside this block."""
    noted = []
    previous = {}
    try:
        for signum in (getattr(signal, name) for name in INTERRUPTS if hasattr(signal, name)):
            handler = signal.getsignal(signum)
            if handler is not signal.SIG_IGN and handler is not None:  # None: set outside Python, left alone
                previous[signum] = signal.signal(signum, lambda number, frame: noted.append(number))
    except ValueError:  # not the main thread
        pass
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if noted:
        first = noted[0]
        if callable(previous[first]):
            previous[first](first, None)  # the first signal's own handler: KeyboardInterrupt, or Interrupted
        else:
            os.kill(os.getpid(), first)  # its default action, now that the block is over


def warn(line: str) -> None:
    """One line on stderr; a closed terminal (SIGHUP) must not turn it into a traceback."""
    with contextlib.suppress(OSError, ValueError):
        print(line, file=sys.stderr, flush=True)


def silence_stdout() -> None:
    """stdout was closed by its reader (train ... | head): what is printed from now on goes to /dev/null."""
    with contextlib.suppress(OSError, ValueError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)


def say(line: str) -> None:
    """Print a progress line; a closed stdout stops the printing, never the training."""
    try:
        print(line, flush=True)
    except BrokenPipeError:
        silence_stdout()


def flush_stdout() -> None:
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()
    except (OSError, ValueError):
        pass


class RunPlace:
    """Where a train command writes and how far it got: what its messages after a fault say."""

    def __init__(self, out: Path, target: Path, model: str, total: int, saved: int):
        self.out, self.target, self.model, self.total = out, target, model, total
        self.saved = saved  # epochs in target's checkpoint
        self.saved_here = False  # a checkpoint was saved by this command
        self.evaluated = False  # its metrics.json is written
        self.replaced = False  # a --force run is in `out`

    def kept(self) -> str:
        if self.replaced:
            return f"{self.out} holds the new run ({plural(self.saved, 'epoch')}) and its test metrics"
        if self.target != self.out:
            if not self.saved:
                return f"{self.out} is unchanged; nothing new was saved"
            if self.evaluated:
                return f"{self.out} is unchanged; the finished new run is in {self.target}"
            finished = plural(self.saved, "finished epoch") + (" are" if self.saved > 1 else " is")
            evaluated = " (all of them, not yet evaluated)" if self.saved >= self.total else ""
            return f"{self.out} is unchanged; the new run's {finished} in {self.target}{evaluated}"
        if not self.saved:
            return "nothing was saved"
        if self.saved < self.total:
            return f"{self.out} holds {self.saved} of {self.total} epochs"
        epochs = f"{'all ' if self.saved > 1 else ''}{plural(self.saved, 'epoch')}"
        return f"{self.out} holds {epochs} but no test metrics yet"

    def hint(self, before: str = "") -> str:
        """The command that carries on from here (after `before`, e.g. "free some space, then ")."""
        if self.replaced:
            return "nothing is left to do"
        if not self.saved:
            return f"{before}train again"
        verb = "continue" if self.saved < self.total else "finish"
        return (f"{before}{verb}{' it' if self.target != self.out else ''} with: "
                f"{command_line('train', self.model, '--out', self.out, '--resume')}")

    def interrupted(self, error: KeyboardInterrupt) -> str:
        if self.target == self.out and not self.saved:
            return f"{interrupted_word(error)} before the first epoch ended: nothing was saved"
        if self.target != self.out and not self.saved:
            return f"{interrupted_word(error)}: {self.kept()}"
        return f"{interrupted_word(error)}: {self.kept()}; {self.hint()}"

    def write_failed(self, what: str, error: OSError, note: str = "") -> str:
        return (f"{what} ({error.strerror or error}): {note}{self.kept()}; "
                f"{self.hint('free some space, then ' if disk_full(error) else 'fix that, then ')}")

    def diverged(self, where: str, trainer: Trainer) -> str:
        rates = "--lr, --adversarial-lr" if getattr(trainer.config, "adversarial_lr", None) is not None else "--lr"
        force = " with --force" if (self.out / CHECKPOINT_NAME).is_file() else ""
        return (f"training diverged ({where}): {self.kept()}; lower the learning rates ({rates}) or use --precision "
                f"fp32, and train again{force}")


def drop_empty_partial(run: RunPlace) -> None:
    """A --force run that saved nothing leaves no partial folder behind."""
    if run.target != run.out and not run.saved:
        remove_partial(run.target)


def non_finite(record: dict) -> list[str]:
    return [f"{key} {value}" for key, value in record.items() if isinstance(value, float) and not math.isfinite(value)]


def weights_finite(model: torch.nn.Module) -> bool:
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    return not tensors or bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


def command_train(args) -> int:
    out = out_folder(args.out)
    if pretrained.is_pretrained(out):
        raise Usage(pretrained_refusal(args, out))
    if args.resume and args.force:
        raise Usage("--resume continues the run in --out and --force replaces it: pass one of them")
    owner = partial_owner(out)
    if owner is not None:
        raise Usage(f"{out} is where the --force run of {owner} trains: continue it with: "
                    f"{command_line('train', args.model, '--out', owner, '--resume')}")
    config = None
    if not args.resume:  # (whether --out may be written, or continued, is checked under its lock: train_locked)
        try:
            config = TrainConfig(model=args.model, device=args.device or "auto", **given_options(args)).resolved()
        except ConfigError as error:
            raise Usage(flag_message(error)) from None
    created = not out.exists()
    check_folder(out)
    try:
        with run_lock(out):
            return train_locked(args, out, config)
    finally:
        if created:  # a command that saved nothing (refused, diverged, interrupted) leaves no empty folder behind
            with contextlib.suppress(OSError):
                out.rmdir()  # only if empty


def recipe_hint(config: TrainConfig, device) -> str | None:
    """A line for a full recipe trained where the quick one is meant (a CPU) and differs from it; else None."""
    model = MODELS[config.model]
    quick = model.recipes.get("quick", {})
    if config.recipe != "full" or not quick or machine_recipe(device) != "quick":
        return None
    full_epochs, quick_epochs = defaults_of(model)["epochs"], defaults_of(model, "quick")["epochs"]
    return (f"the full recipe of {config.model} trains {full_epochs} epochs, hours on a {device.type.upper()}: "
            f"--recipe quick trains {quick_epochs} (what it is for), and a GPU trains the full one in minutes")


def train_locked(args, out: Path, config) -> int:
    """`train`, with the lock of `out` held: nothing here runs beside another writer of `out`."""
    for name in (CHECKPOINT_NAME, METRICS_NAME):
        incoming(out, name).unlink(missing_ok=True)  # left by a replace_run that was cut short
    pending = find_partial(out)  # an unfinished --force run of `out`
    metrics = None
    if args.resume:
        # an unfinished --force run is what --resume continues (its interruption said so); it replaces `out` at the end
        target = pending if pending is not None and (pending / CHECKPOINT_NAME).is_file() else out
        if not (target / CHECKPOINT_NAME).is_file():
            raise Usage(f"--resume: no {CHECKPOINT_NAME} in {out}; train a model there first")
        if target != out:
            check_partial(target, out)
        trainer = resumed_trainer(args, out, target)
        done = len(trainer.history)
        if target != out and done >= trainer.config.epochs and metrics_describe(target, done):
            metrics = json.loads((target / METRICS_NAME).read_text())  # finished: only its move into `out` is left
    else:
        if (out / CHECKPOINT_NAME).is_file() and not args.force:
            raise Usage(f"{out} already holds a trained model: pass --force to replace it, or --resume to continue "
                        "it")
        if pending is not None:  # a new run takes the place of an unfinished --force run: that one is kept
            check_partial(pending, out)
            if (pending / CHECKPOINT_NAME).is_file():
                warn(set_aside(pending, out)[1])
            else:
                remove_partial(pending)
        target = partial_place(out) if (out / CHECKPOINT_NAME).is_file() else out
        if target != out:
            check_partial(target, out)
        try:
            trainer = Trainer(config)
        except ConfigError as error:  # e.g. bf16 where it is not supported
            raise Usage(flag_message(error)) from None
        if target != out:  # --force: train beside the old run, replace it at the end
            make_partial(target, out)
    run = RunPlace(out, target, trainer.config.model, trainer.config.epochs, len(trainer.history))
    run.evaluated = metrics is not None
    print_smoke_note(trainer)
    if target != out and args.resume:
        say(f"continuing the unfinished --force run of {out} in {target}; it replaces {out} when it ends")
    if run.saved < run.total:
        say(f"training {trainer.config.model} on {trainer.device} ({'bf16' if trainer.use_bf16 else 'fp32'}), "
            f"{len(trainer.data.train_images)} images, {trainer.config.recipe} recipe")
        hint = None if args.resume or args.epochs is not None else recipe_hint(trainer.config, trainer.device)
        if hint:
            say(hint)
    elif metrics is None:
        say(f"evaluating the {plural(run.saved, 'epoch')} of {target}: they are trained, their test metrics missing")

    def report(trainer, record):
        bad = non_finite(record)
        if bad or not weights_finite(trainer.model):  # never saved as if it were a good model
            where = f"epoch {record['epoch']}: {', '.join(bad) or 'non-finite weights'}"
            raise RunFault(run.diverged(where, trainer))
        # A signal inside torch.save would break the file: it waits until the epoch is saved and counted.
        with interrupts_deferred():
            try:
                if not run.saved_here:  # metrics.json described the checkpoint this one replaces
                    (target / METRICS_NAME).unlink(missing_ok=True)
                save_checkpoint(trainer, target)  # every epoch, so that an interrupted run can --resume
            except OSError as error:
                note = "the last good epoch is kept, " if run.saved else ""
                raise RunFault(run.write_failed(f"cannot save epoch {record['epoch']} in {target}", error,
                                                note)) from None
            run.saved, run.saved_here = len(trainer.history), True
        losses = ", ".join(f"{k} {v:.4f}" for k, v in record.items() if k not in {"epoch", "seconds"})
        say(f"epoch {record['epoch']}/{run.total}: {record['seconds']:.1f} s  {losses}")

    try:
        if metrics is None:
            if run.saved < run.total:
                trainer.fit(epochs=run.total, callback=report, progress=False)
            metrics = evaluation.test_metrics(trainer)
            bad = non_finite(metrics)
            try:
                text = json.dumps(metrics, indent=2, allow_nan=False) + "\n"
            except ValueError:
                bad = bad or ["a nested value"]
            if bad:
                raise RunFault(run.diverged(f"test metrics not finite: {', '.join(bad)}", trainer))
            try:
                atomic_write_text(text, target / METRICS_NAME)
            except OSError as error:
                raise RunFault(run.write_failed(f"cannot write {error.filename or target / METRICS_NAME}",
                                                error)) from None
            run.evaluated = True
        if target != out:
            try:
                with interrupts_deferred():
                    replace_run(target, out)
                    run.replaced = True
            except OSError as error:
                raise RunFault(run.write_failed(f"cannot move the new run from {target} into {out}", error)) from None
    except KeyboardInterrupt as error:
        drop_empty_partial(run)
        warn(run.interrupted(error))
        return interrupt_status(error)
    except FloatingPointError:  # fit: a non-finite loss (that epoch was not saved)
        drop_empty_partial(run)
        raise RunFault(run.diverged(f"epoch {len(trainer.history) + 1}: a non-finite loss", trainer)) from None
    except RunFault:
        drop_empty_partial(run)
        raise
    say(json.dumps(metrics, allow_nan=False))
    return 0


# -- commands on a trained run -------------------------------------------------------------------------------------
def open_run(args, capability: str | None = None, needs: str = "") -> Trainer:
    """The run or pretrained model in args.dir; with `capability`, refused unless its model has it (a command that
    `needs` it)."""
    if pretrained.is_pretrained(args.dir):
        trainer = pretrained.load(args.dir, device=args.device)
        manifest = trainer.pretrained
        warn(f"note: {args.dir} is the pretrained model {manifest['name']!r} ({manifest['model']}, "
             f"{plural(len(manifest['history']), 'epoch')}; weights only, stored in float16)")
    elif not (Path(args.dir) / CHECKPOINT_NAME).is_file():
        raise Usage(f"no {CHECKPOINT_NAME} in {args.dir}: train a model there first (python -m saae_lib train)")
    else:
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
    quick = "; ".join(f"{kind}: {', '.join(f'{k}={v}' for k, v in model.recipes['quick'].items())}"
                      for kind, model in MODELS.items() if model.recipes.get("quick"))
    uses = "; ".join(f"{kind}: {', '.join(FLAGS[o][0] for o in model_options(model))}"
                     for kind, model in MODELS.items() if model_options(model))

    train = commands.add_parser("train", help="train a model, write DIR/checkpoint.pt and DIR/metrics.json",
                                description=f"Train a model on MNIST. Defaults per model (the full recipe): "
                                            f"{defaults}. The quick recipe (--recipe quick) changes: {quick}; the "
                                            f"other models train their full recipe. Options that only some models "
                                            f"use: {uses}.")
    train.add_argument("model", choices=MODELS)
    train.add_argument("--out", required=True, help="output folder")
    for option, (flag, keywords) in FLAGS.items():
        train.add_argument(flag, dest=option, **keywords)
    train.add_argument("--device", help="auto (default), cpu, cuda or mps")
    train.add_argument("--resume", action="store_true", help="continue the run in --out (up to --epochs): an "
                       "unfinished --force run beside it first, else its own; with all epochs done, evaluate it")
    train.add_argument("--force", action="store_true", help="replace the run in --out (kept until the new one ends)")

    evaluate = commands.add_parser("evaluate", help="print a trained model's test metrics as JSON")
    sample = commands.add_parser("sample", help="decode N prior samples into images (.npz)")
    predict = commands.add_parser("predict", help="predicted digit of each test image (.npy)")
    encode = commands.add_parser("encode", help="codes of the test images (.npz: codes, labels)")
    for sub in (evaluate, sample, predict, encode):
        sub.add_argument("dir", help="folder with checkpoint.pt, or a pretrained model's folder")
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


def disk_full(error: OSError) -> bool:
    """No space left (or over a disk quota)."""
    return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def describe(error: OSError) -> str:
    where = f"{error.filename}: " if error.filename else ""
    if disk_full(error):
        return f"{where}{error.strerror or error}; free some space and run it again"
    return f"{where}{error.strerror or error}; check the path, its permissions and the free disk space"


def main(argv=None) -> int:
    parser = build_parser()
    try:
        with interrupt_signals():  # SIGTERM and SIGHUP end a command as Ctrl-C does
            args = parser.parse_args(argv)
            if getattr(args, "device", None):
                try:
                    settings.pick_device(args.device)
                except ValueError as error:
                    raise Usage(str(error)) from None
            status = COMMANDS[args.command](args)
        flush_stdout()
        return status
    except Usage as error:
        parser.error(str(error))
    except ConfigError as error:  # a saved run that cannot run here as asked (e.g. --resume --cuda-graph on, no GPU)
        parser.error(flag_message(error))
    except (settings.SettingError, RunFolderError) as error:  # SAAE_FAST=ture; a run folder not to be touched
        parser.error(str(error))
    except KeyboardInterrupt as error:
        warn(interrupted_word(error))
        return interrupt_status(error)
    except RunFault as error:
        warn(f"error: {error}")
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
    except BrokenPipeError:  # its reader closed stdout (train keeps going without printing: see say)
        silence_stdout()
        warn("error: the output was closed (broken pipe) before the command ended; run it again and read all of it")
    except OSError as error:
        print(f"error: {describe(error)}", file=sys.stderr)
    return 1
