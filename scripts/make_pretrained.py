"""Train the models listed in pretrained/REGISTRY.json and export each to pretrained/NAME (`make pretrained`).

    python scripts/make_pretrained.py [--registry FILE] [--out FOLDER] [--runs FOLDER] [--device DEVICE] [--jobs N]

Each entry is trained with the command line into runs/pretrained/NAME, side by side, one process each with one CPU
thread (OMP_NUM_THREADS=1: on a CPU, one thread per model wastes no time on threads waiting for each other), as many
at a time as the machine has cores (--jobs), the next one starting when one ends: three single-thread runs on two
cores took 27 s an epoch each where two took 13 (the semi-supervised model on a 2-core CPU with bf16 units). Their
lines are shown prefixed with their names. A run with a checkpoint is continued (--resume), one already
finished is kept, and one trained with other options than its entry's now is trained again (--force, which keeps the
old run until the new one has finished). Each finished run is then exported to pretrained/NAME
(saae_lib.pretrained.export) with the time its epochs took, unless the folder there is that very model already.
Interrupted or failed, it loses nothing: run it again to carry on.
"""

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the library of this checkout, even where another one is installed

from saae_lib import pretrained, settings  # noqa: E402
from saae_lib.checkpoints import (  # noqa: E402
    CHECKPOINT_NAME,
    CheckpointError,
    load_checkpoint,
    read_checkpoint,
    same_run,
)
from saae_lib.cli import FLAGS, recipe_arguments  # noqa: E402
from saae_lib.runs import command_line, find_partial, metrics_describe  # noqa: E402
from saae_lib.training import ConfigError, TrainConfig  # noqa: E402

ENTRY_KEYS = ("name", "model", "options", "seed")
# What an entry's options may set: every option of `train` but the seed (an entry's own key) and those that say where
# and how fast it trains, not what it is.
ENTRY_OPTIONS = tuple(option for option in FLAGS if option in pretrained.RECIPE_OPTIONS and option != "seed")


class RegistryError(Exception):
    """A registry that cannot be read or that lists an entry that cannot be trained: one line saying which."""


class Entry:
    """One model of the registry: its name, its resolved config and the `train` words that give it."""

    def __init__(self, name: str, model: str, options: dict, seed: int, device: str):
        self.name, self.model = name, model
        self.arguments = recipe_arguments({**options, "seed": seed})
        self.config = TrainConfig(model=model, seed=seed, device=device, **options).resolved()


def positive(text: str) -> int:
    """--jobs: a whole number of at least 1 (argparse turns the ValueError into a one-line usage error)."""
    number = int(text)
    if number < 1:
        raise ValueError(text)
    return number


def refuse_constant(constant):
    raise ValueError(f"{constant} is not a number strict JSON allows")


def read_registry(path: Path, device: str) -> list[Entry]:
    try:
        registry = json.loads(path.read_text(), parse_constant=refuse_constant)
    except FileNotFoundError:
        raise RegistryError(f"no registry at {path}: create it (see pretrained/REGISTRY.json for the format)") \
            from None
    except (OSError, ValueError) as error:
        raise RegistryError(f"{path} cannot be read as JSON ({error}): fix it") from None
    if not isinstance(registry, dict) or not isinstance(registry.get("models"), list):
        raise RegistryError(f"{path} has no list of \"models\": see its \"comment\" for the format")
    entries, names = [], set()
    for number, item in enumerate(registry["models"], 1):
        where = f"{path}, model {number}"
        if not isinstance(item, dict) or set(item) != set(ENTRY_KEYS):
            raise RegistryError(f"{where}: an entry has exactly the keys {', '.join(ENTRY_KEYS)}, got "
                                f"{sorted(item) if isinstance(item, dict) else item!r}")
        name, options = item["name"], item["options"]
        if not isinstance(name, str) or not pretrained.RUN_NAME.fullmatch(name) or name in names:
            raise RegistryError(f"{where}: {name!r} is not a plain folder name, or is listed twice: give each "
                                "model its own name (letters, digits, '_', '-', '.')")
        names.add(name)
        if not isinstance(options, dict) or set(options) - set(ENTRY_OPTIONS):
            other = sorted(set(options) - set(ENTRY_OPTIONS)) if isinstance(options, dict) else options
            raise RegistryError(f"{where} ({name}): its options may be {', '.join(ENTRY_OPTIONS)}; not {other}")
        try:
            entries.append(Entry(name, item["model"], options, item["seed"], device))
        except (ConfigError, TypeError) as error:
            raise RegistryError(f"{where} ({name}): {error}") from None
    return entries


def plan(entry: Entry, run: Path) -> tuple[str, str | None]:
    """What the run folder needs: ("done" | "resume" | "force" | "new", why, for a run trained again)."""
    partial = find_partial(run)
    if partial is not None and (partial / CHECKPOINT_NAME).is_file():
        return "resume", None  # an interrupted --force run: train --resume continues it first
    if not (run / CHECKPOINT_NAME).is_file():
        return "new", None
    try:
        state, saved = read_checkpoint(run)
    except CheckpointError:
        return "resume", None  # train --resume says what is wrong with it, in its one line
    wanted = asdict(entry.config)
    if state["smoke"] != settings.smoke_mode():
        return "force", "it was trained in the other mode (SAAE_FAST)"
    if not same_run({**saved, "epochs": wanted["epochs"]}, wanted) or len(state["history"]) > wanted["epochs"]:
        return "force", "it was trained with other options than the registry's"
    done = len(state["history"])
    if done == wanted["epochs"] and metrics_describe(run, done):
        return "done", None
    return "resume", None


def relay(name: str, stream, lock: threading.Lock) -> None:
    """Show a training process's lines, each prefixed with its model's name."""
    for line in stream:
        with lock:
            print(f"[{name}] {line.rstrip()}", flush=True)


def train_all(entries: list[Entry], runs: Path, device: str, jobs: int) -> dict[str, int]:
    """Train the entries side by side, `jobs` processes at a time; their exit statuses (0 for a run finished
    before)."""
    statuses, queue, running, lock = {}, [], {}, threading.Lock()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SAAE_PROGRESS": "0", "PYTHONUNBUFFERED": "1"}
    for entry in entries:
        run = runs / entry.name
        step, why = plan(entry, run)
        if step == "done":
            print(f"[{entry.name}] {run} is trained already ({entry.config.epochs} epochs)", flush=True)
            statuses[entry.name] = 0
            continue
        words = ["train", entry.model, "--out", str(run), *entry.arguments, "--device", device]
        queue.append((entry.name, words + {"resume": ["--resume"], "force": ["--force"], "new": []}[step], why))
    if len(queue) > jobs:
        print(f"training {len(queue)} models, {jobs} at a time (--jobs): the others start as these end", flush=True)
    try:
        while queue or running:
            while queue and len(running) < jobs:
                name, words, why = queue.pop(0)
                if why:
                    print(f"[{name}] training it again: {runs / name} {why}", flush=True)
                print(f"[{name}] {command_line(*words)}", flush=True)
                process = subprocess.Popen([sys.executable, "-m", "saae_lib", *words], stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
                thread = threading.Thread(target=relay, args=(name, process.stdout, lock), daemon=True)
                thread.start()
                running[name] = (process, thread)
            ended = [name for name, (process, _) in running.items() if process.poll() is not None]
            for name in ended:
                process, thread = running.pop(name)
                thread.join()
                statuses[name] = process.returncode
            if not ended:
                time.sleep(0.2)
    except KeyboardInterrupt:  # the running processes got the Ctrl-C too: each saves what it has and ends
        for process, thread in running.values():
            process.wait()
            thread.join()
        raise
    return statuses


def export_run(entry: Entry, run: Path, out: Path, note: str, device: str | None) -> None:
    """Export the finished run to `out`, unless `out` holds that very model (same recipe, same history) already."""
    trainer = load_checkpoint(run, device=device)
    if pretrained.is_pretrained(out):
        try:
            manifest = pretrained.verify(out)
        except pretrained.PretrainedError:
            manifest = None
        if (manifest is not None and manifest["recipe"] == pretrained.recipe_of(trainer.config)
                and manifest["history"] == json.loads(json.dumps(trainer.history))
                and manifest["smoke"] == trainer.smoke):
            print(f"[{entry.name}] {out} is up to date", flush=True)
            return
    seconds = sum(record["seconds"] for record in trainer.history)
    pretrained.export(trainer, out, training_seconds=seconds, name=entry.name, training_note=note)
    shown = ", ".join(f"{key} {value:.4f}" for key, value in pretrained.verify(out)["test"].items()
                      if isinstance(value, float) and key != "seconds_per_epoch")
    print(f"[{entry.name}] exported to {out} (test numbers as loaded from it: {shown})", flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--registry", type=Path, default=ROOT / "pretrained" / "REGISTRY.json")
    parser.add_argument("--out", type=Path, default=ROOT / "pretrained", help="where the pretrained folders go")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "pretrained", help="where the runs train")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda or mps")
    parser.add_argument("--jobs", type=positive, default=os.cpu_count() or 1,
                        help="how many models train at a time, one CPU thread each (default: the machine's cores)")
    args = parser.parse_args(argv)
    runs, out = args.runs.absolute(), args.out.absolute()  # the training processes run in the repository's root
    try:
        entries = read_registry(args.registry, args.device)
    except RegistryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if not entries:
        print(f"{args.registry} lists no models: nothing to train (add entries to its \"models\")")
        return 0
    try:
        statuses = train_all(entries, runs, args.device, args.jobs)
    except KeyboardInterrupt:
        print(f"interrupted: each run keeps its finished epochs in {runs}; run make pretrained again to continue "
              "them", file=sys.stderr)
        return 130
    at_once = min(len(entries), args.jobs)
    side = "one model at a time" if at_once == 1 else f"up to {at_once} models side by side"
    note = f"the sum of its epochs' times, measured while make pretrained trained {side}, one CPU thread each"
    failed = [name for name, status in statuses.items() if status != 0]
    for entry in entries:
        if entry.name in failed:
            continue
        try:
            export_run(entry, runs / entry.name, out / entry.name, note,
                       None if args.device == "auto" else args.device)
        except (CheckpointError, OSError) as error:
            print(f"[{entry.name}] error: cannot export it: {error}", file=sys.stderr, flush=True)
            failed.append(entry.name)
    if failed:
        print(f"error: {len(failed)} of {len(entries)} models failed ({', '.join(failed)}): see their lines above; "
              "fix that and run make pretrained again (finished epochs are kept)", file=sys.stderr)
        return 1
    print(f"all {len(entries)} models of {args.registry} are trained and in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
