"""A sweep of validation probes, several seeds each, side by side, within a time budget; then the final recipes once
on the test set. Made for one command on a borrowed GPU (benchmarks/gpu_sweep.sh), usable anywhere.

    python -m benchmarks.sweep --dry-run --parallel 8            # the plan, its run count and estimated time
    python -m benchmarks.sweep --stage validation --parallel 8 --budget-seconds 500 --out-dir runs/sweep
    python -m benchmarks.sweep --stage all --only semi100-step test-semi100 --out-dir runs/sweep2
    python -m benchmarks.sweep --export-pretrained runs/sweep2/pretrained   # its saved test runs, as pretrained
    python -m benchmarks.sweep --merge runs/sweep                # its rows into benchmarks/results/probes.jsonl

The plan (benchmarks/sweep_plan.json, or --plan FILE) is JSON, so that it can be edited between stages without
touching code: {"defaults": {...}, "groups": [GROUP, ...]}, each GROUP
    name         letters, digits, '.', '_', '-' (names its files)        stage  "validation" or "test"
    model        a name in saae_lib.models.MODELS                         options  TrainConfig fields, JSON values
    seeds        e.g. [0, 1, 2]                                           every  measure every this many epochs
    ema          EMA decays (probe --ema)                                 recalibrate  probe --recalibrate
    pretrained   test stage only: the name its first seed's saved run is exported under (e.g. "semi-100")
    note         free text
"defaults" gives seeds and every for groups that do not say. A test-stage run also gets probe --test (the test
set's numbers, once, at the end) and --save (the trained run, under --save-dir, default OUT_DIR/saved). A test run
writes validation rows every N epochs too, so a test group is also the baseline of the validation variants: the
summary gives its validation numbers at the last epoch like any group's (run it with them: --stage all).

Before anything starts, every planned run's options are checked as the probe will check them
(TrainConfig(model=..., seed=..., **options).resolved(), and what --ema/--recalibrate need); each refused run is
named on one line, then the sweep stops (exit 2) or, with --skip-invalid, runs the rest. So is a duplicate run: one
that trains exactly what another planned run trains (same model, seed and resolved options; --every, --ema and
--recalibrate only measure), the test run being the one kept.

Running: up to --parallel `python -m benchmarks.probe` processes side by side, each with OMP_NUM_THREADS =
max(1, CPUs // parallel) and the rest of this environment (SAAE_DATA_DIR, ...), each writing OUT_DIR/runs/NAME.jsonl
and OUT_DIR/logs/NAME.log (NAME = GROUP-seedS). Order: first seeds first (every group's first seed, longest first,
then every group's second seed, ...), so that a budget cut leaves every group with some seeds rather than some groups
with none. No run starts whose estimated time exceeds what is left of the budget: startup + epochs x seconds per
epoch (measured on the runs of the same model and widths already reporting, else of the same model, else the
declared defaults below) + the test measurement for a test run. At the budget's end the runs still going are
killed (their rows so far are kept). If a planned run's model is judged by the digit classifier and it is not
cached yet, one process trains it first and only the runs that need it wait.

Output: one line per finished run, a summary per group (mean ± std over seeds of the main measure at the last
epoch; for the test stage, the test numbers), and OUT_DIR/summary.json (rewritten as runs finish). OUT_DIR/sweep.json
describes the sweep for --merge. Exit status: 0 every run (but those skipped as invalid) finished; 1 a run failed
(named, with the tail of its log); 2 bad arguments, plan or environment, or refused options without --skip-invalid;
3 the budget ran out before every run finished (none failed).

--export-pretrained FOLDER (after the sweep, its own step, so that nothing it does can cost the sweep's rows) exports
the saved run of each test group that names a `pretrained` model, its first seed, with saae_lib.pretrained.export
(training_seconds: the sum of its epochs' seconds) to FOLDER/NAME, and verifies it; the sweep is the one in --out-dir,
default FOLDER's parent (its sweep.json says where the runs were saved). One line per model, exported or failed, then
the sizes; summary.json gets "pretrained": what became of each. Exit status 0, or 4 if a model was not exported.
The dry run gives the sizes to expect (about 11 MB a 1000-1000 model).

--merge OUT_DIR appends the rows of its runs to --probes (default benchmarks/results/probes.jsonl), each with a
"probe" note saying how it ran; a row already there is skipped, so merging twice adds nothing.
"""

import argparse
import json
import math
import os
import re
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAN = ROOT / "benchmarks" / "sweep_plan.json"
PROBES = ROOT / "benchmarks" / "results" / "probes.jsonl"
STAGES = ("validation", "test")
# Declared estimates where nothing has been measured yet. CUDA: an H200 semi epoch is about 0.2 s with the CUDA
# graph; 0.3 covers the measurements every 25 epochs and the sharing of the GPU. CPU: a 1000-1000 model on 2 cores.
SECONDS_PER_EPOCH = {"cuda": 0.3, "cpu": 20.0, "mps": 2.0}
# A CUDA run its placement does not replay as a graph (cuda_graph=off, optimizer=momentum) launches kernel by kernel:
# 1.3-1.6 s an epoch measured on an H200 with five such runs side by side (probes.jsonl, "eager step").
EAGER_CUDA_SECONDS_PER_EPOCH = 1.5
STARTUP_SECONDS = {"cuda": 20.0, "cpu": 10.0, "mps": 15.0}  # interpreter, MNIST, model, CUDA context
TEST_SECONDS = {"cuda": 15.0, "cpu": 60.0, "mps": 30.0}  # probe --test: the test measurement and --save
GRACE_SECONDS = 5  # after SIGTERM at the budget's end, before SIGKILL
POLL_SECONDS = 0.5
GROUP_FIELDS = {"name", "stage", "model", "options", "seeds", "every", "ema", "recalibrate", "pretrained", "note"}
SAFE_NAME = re.compile(r"[A-Za-z0-9._-]+")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUDGET, EXIT_EXPORT = 0, 1, 2, 3, 4
MB = 1e6  # sizes are printed in decimal megabytes (a device's limits are in MiB: 16 a file, 64 in all)
JUDGE_WARMUP = "from saae_lib.digit_classifier import load_judge; load_judge(progress=False)"  # python -c, once


class PlanError(Exception):
    """A plan the sweep cannot run as written (exit 2)."""


# -- the plan ----------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Group:
    name: str
    stage: str
    model: str
    options: dict
    seeds: tuple[int, ...]
    every: int
    ema: tuple[float, ...] = ()
    recalibrate: bool = False
    pretrained: str = ""  # test stage: the name its first seed's run is exported under ("": not exported)
    note: str = ""


def load_plan(path: Path) -> list[Group]:
    """The plan's groups, checked for form (the options are checked per run by `refusals`)."""
    try:
        plan = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise PlanError(f"cannot read the plan {path}: {error}") from None
    if not isinstance(plan, dict) or not isinstance(plan.get("groups"), list) or not plan["groups"]:
        raise PlanError(f"{path}: a plan is an object with a non-empty list 'groups'")
    defaults = plan.get("defaults", {})
    if not isinstance(defaults, dict) or set(defaults) - {"seeds", "every"}:
        raise PlanError(f"{path}: 'defaults' may give seeds and every only")
    groups, names, exported = [], set(), {}
    for number, entry in enumerate(plan["groups"], 1):
        where = f"{path}, group {number}"
        if not isinstance(entry, dict):
            raise PlanError(f"{where}: a group is an object")
        where = f"{path}, group {entry.get('name', number)!r}"
        unknown = set(entry) - GROUP_FIELDS
        if unknown:
            raise PlanError(f"{where}: unknown field(s) {', '.join(sorted(unknown))} "
                            f"(a group has {', '.join(sorted(GROUP_FIELDS))})")
        entry = {**defaults, **entry}
        name, stage, model = entry.get("name"), entry.get("stage"), entry.get("model")
        if not isinstance(name, str) or not SAFE_NAME.fullmatch(name):
            raise PlanError(f"{where}: 'name' must be letters, digits, '.', '_' or '-'")
        if name in names:
            raise PlanError(f"{where}: two groups are named {name!r}")
        names.add(name)
        if stage not in STAGES:
            raise PlanError(f"{where}: 'stage' must be one of {', '.join(STAGES)}, got {stage!r}")
        if not isinstance(model, str):
            raise PlanError(f"{where}: 'model' must be a model name")
        options = entry.get("options", {})
        if not isinstance(options, dict):
            raise PlanError(f"{where}: 'options' must be an object of TrainConfig fields")
        seeds = entry.get("seeds")
        if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
                or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
            raise PlanError(f"{where}: 'seeds' must be a non-empty list of distinct integers >= 0")
        every = entry.get("every")
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            raise PlanError(f"{where}: 'every' must be a positive integer")
        ema = entry.get("ema", [])
        if not isinstance(ema, list) or not all(isinstance(d, (int, float)) and not isinstance(d, bool)
                                                and 0 < d < 1 for d in ema):
            raise PlanError(f"{where}: 'ema' must be a list of decays between 0 and 1")
        recalibrate = entry.get("recalibrate", False)
        if not isinstance(recalibrate, bool):
            raise PlanError(f"{where}: 'recalibrate' must be true or false")
        pretrained = entry.get("pretrained", "")
        if pretrained:
            from saae_lib.checkpoints import RUN_NAME

            if stage != "test":
                raise PlanError(f"{where}: 'pretrained' exports a saved run: only a test-stage group has one")
            if not isinstance(pretrained, str) or not RUN_NAME.fullmatch(pretrained):
                raise PlanError(f"{where}: 'pretrained' must be a plain name (letters, digits, '_', '-', '.' not "
                                "first)")
            if pretrained in exported:
                raise PlanError(f"{where}: groups {exported[pretrained]!r} and {name!r} are both exported as "
                                f"{pretrained!r}")
            exported[pretrained] = name
        groups.append(Group(name=name, stage=stage, model=model, options=options, seeds=tuple(seeds), every=every,
                            ema=tuple(ema), recalibrate=recalibrate, pretrained=pretrained,
                            note=str(entry.get("note", ""))))
    return groups


@dataclass
class Run:
    """One probe run: a group's configuration with one seed, and what became of it."""

    group: Group
    seed: int
    order: int  # the seed's place in its group (0 for the first seed)
    config: object = None  # the resolved TrainConfig, once checked
    status: str = "queued"  # queued, running, done, failed, killed, not started, refused
    reason: str = ""
    process: subprocess.Popen | None = None
    log_file: object = None
    started: float | None = None
    ended: float | None = None
    first_row_at: float | None = None
    returncode: int | None = None
    rows: list = field(default_factory=list)
    read_offset: int = 0

    @property
    def name(self) -> str:
        return f"{self.group.name}-seed{self.seed}"

    @property
    def epochs(self) -> int:
        return self.config.epochs if self.config is not None else int(self.group.options.get("epochs", 0) or 0)

    @property
    def is_test(self) -> bool:
        return self.group.stage == "test"

    @property
    def pretrained(self) -> str:
        """The name this run is exported under: a test group's first seed, where the group names one."""
        return self.group.pretrained if self.is_test and self.order == 0 else ""

    @property
    def wall_seconds(self) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else time.monotonic()) - self.started


def plan_runs(groups: list[Group]) -> list[Run]:
    return [Run(group=g, seed=s, order=i) for g in groups for i, s in enumerate(g.seeds)]


def refusals(runs: list[Run]) -> list[Run]:
    """Check every run's options as the probe will (the config, and what --ema and --recalibrate need); a refused
    run gets status "refused" and its reason. Returns the refused runs."""
    from saae_lib.models import MODELS
    from saae_lib.training import OPTIONS, ConfigError, TrainConfig

    refused = []
    for run in runs:
        group, options = run.group, run.group.options
        reason = ""
        unknown = [key for key in options if key not in OPTIONS]
        if group.model not in MODELS:
            reason = f"unknown model {group.model!r} (the models: {', '.join(MODELS)})"
        elif unknown:
            reason = f"unknown option(s) {', '.join(unknown)} (not TrainConfig fields)"
        elif "model" in options or "seed" in options:
            reason = "'model' and 'seed' are the group's model and seeds, not options"
        else:
            try:
                run.config = TrainConfig(model=group.model, seed=run.seed, **options).resolved(smoke=False)
            except (ConfigError, TypeError, ValueError) as error:
                reason = str(error)
            else:
                measures = MODELS[group.model].measures
                if (group.ema or group.recalibrate) and "classification" not in measures:
                    reason = f"ema and recalibrate measure classification error, which {group.model} has not"
                elif group.recalibrate and not run.config.batch_norm:
                    reason = "recalibrate needs batch_norm=true"
        if reason:
            run.status, run.reason, run.config = "refused", reason, None
            refused.append(run)
    return refused + duplicates(runs)


def duplicates(runs: list[Run]) -> list[Run]:
    """Refuse the runs that train exactly what another planned run trains (the same model, seed and resolved
    options, up to where it runs; --every, --ema and --recalibrate only measure). A test run is the one kept: it
    writes validation rows every N epochs too, before its test row. Returns the runs refused here."""
    from saae_lib.checkpoints import same_run

    kept: list[Run] = []
    refused = []
    for run in sorted((r for r in runs if r.config is not None), key=lambda r: not r.is_test):  # stable: plan order
        config = asdict(run.config)
        twin = next((other for other in kept if same_run(asdict(other.config), config)), None)
        if twin is None:
            kept.append(run)
            continue
        run.status, run.config = "refused", None
        run.reason = (f"duplicate run: trains exactly what {twin.group.name} seed {twin.seed} trains (same model, seed "
                      "and resolved options)")
        if twin.is_test:
            run.reason += f"; its validation rows (every {twin.group.every} epochs) stand in for this run's"
        refused.append(run)
    return refused


def main_measure(model: str) -> str:
    """The model's main number, without its split prefix: error, clustering_error or reconstruction_mse."""
    from saae_lib.models import MODELS

    measures = MODELS[model].measures if model in MODELS else ()
    if "classification" in measures:
        return "error"
    if "clustering" in measures:
        return "clustering_error"
    return "reconstruction_mse"


def needs_judge(run: Run) -> bool:
    from saae_lib.models import MODELS

    return "generated_digits" in MODELS[run.group.model].measures


# -- estimates ---------------------------------------------------------------------------------------------------
def device_kind(options: dict, default: str) -> str:
    device = str(options.get("device", "auto"))
    return default if device == "auto" else device.split(":")[0]


def this_device() -> str:
    from saae_lib import settings

    return settings.pick_device("auto").type


class Estimator:
    """Seconds a run will take: startup + epochs x seconds per epoch (+ the test measurement), from what the runs
    already reporting measured (elapsed seconds per epoch of their latest row; startup = time to their first row
    less that row's elapsed time), else the declared defaults of the device kind."""

    def __init__(self, kind: str):
        self.kind = kind
        self.rates: dict[tuple, dict[str, float]] = {}
        self.startups: dict[str, float] = {}

    def graphed(self, run: Run) -> bool:
        """Whether the run's steps replay a CUDA graph (as training.placement decides it)."""
        config = run.config
        return (self.kind_of(run) == "cuda" and config is not None and getattr(config, "cuda_graph", "auto") != "off"
                and getattr(config, "optimizer", "adam") == "adam")

    def key(self, run: Run) -> tuple:
        return (run.group.model, self.graphed(run), tuple(run.config.hidden) if run.config is not None else ())

    def observe(self, run: Run, row: dict, now: float) -> None:
        epoch, elapsed = row.get("epoch"), row.get("elapsed_seconds")
        if "test" in row or not isinstance(epoch, int) or epoch < 1 or not isinstance(elapsed, (int, float)):
            return
        self.rates.setdefault(self.key(run), {})[run.name] = elapsed / epoch
        if run.name not in self.startups and run.started is not None:
            self.startups[run.name] = max(0.0, now - run.started - elapsed)

    def seconds_per_epoch(self, run: Run) -> float:
        key = self.key(run)
        same = self.rates.get(key)
        if not same:  # the same model stepping the same way, other widths
            same = {name: rate for other, rates in self.rates.items() if other[:2] == key[:2]
                    for name, rate in rates.items()}
        if same:
            return statistics.fmean(same.values())
        if self.kind_of(run) == "cuda" and not self.graphed(run):
            return EAGER_CUDA_SECONDS_PER_EPOCH
        return SECONDS_PER_EPOCH.get(self.kind_of(run), SECONDS_PER_EPOCH["cpu"])

    def kind_of(self, run: Run) -> str:
        return device_kind(run.group.options, self.kind)

    def startup(self, run: Run) -> float:
        if self.startups:
            return statistics.fmean(self.startups.values())
        return STARTUP_SECONDS.get(self.kind_of(run), STARTUP_SECONDS["cpu"])

    def estimate(self, run: Run) -> float:
        test = TEST_SECONDS.get(self.kind_of(run), TEST_SECONDS["cpu"]) if run.is_test else 0.0
        return self.startup(run) + run.epochs * self.seconds_per_epoch(run) + test


def queue_order(runs: list[Run], estimator: Estimator) -> list[Run]:
    """First seeds first, longest first within, test runs before validation ones of the same length."""
    return sorted(runs, key=lambda r: (r.order, -estimator.estimate(r), not r.is_test, r.group.name))


def simulate(runs: list[Run], estimator: Estimator, parallel: int, budget: float) -> tuple[float, list[Run]]:
    """The scheduler's plan with the estimates as they stand: (seconds until the last run ends, runs that would not
    start within the budget)."""
    queue, ends, now, unstarted = queue_order(runs, estimator), [], 0.0, []
    while queue:
        ends = sorted(ends)
        while len(ends) >= parallel:
            now = max(now, ends.pop(0))
        fitting = next((r for r in queue if now + estimator.estimate(r) <= budget), None)
        if fitting is None:
            if not ends:
                unstarted = list(queue)
                break
            now = max(now, ends.pop(0))
            continue
        queue.remove(fitting)
        ends.append(now + estimator.estimate(fitting))
    return max([now, *ends]), unstarted


# -- running -----------------------------------------------------------------------------------------------------
def probe_command(run: Run, out_dir: Path, save_dir: Path) -> list[str]:
    group = run.group
    command = [sys.executable, "-m", "benchmarks.probe", group.model,
               *(f"{key}={json.dumps(value, separators=(',', ':'))}" for key, value in group.options.items()),
               "--seed", str(run.seed), "--every", str(group.every),
               "--out", str(out_dir / "runs" / f"{run.name}.jsonl")]
    if group.ema:
        command += ["--ema", *(f"{decay:g}" for decay in group.ema)]
    if group.recalibrate:
        command.append("--recalibrate")
    if run.is_test:
        command += ["--test", "--save", str(save_dir / run.name)]
    return command


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def current_commit() -> tuple[str, bool | None]:
    """The short commit of the working tree and whether it has changes ("" and None without git)."""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=ROOT).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, cwd=ROOT).stdout.strip()
    except OSError:
        return "", None
    return commit, (bool(dirty) if commit else None)


def log_tail(run: Run, out_dir: Path, lines: int = 15) -> str:
    try:
        text = (out_dir / "logs" / f"{run.name}.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    | " + line for line in text.splitlines()[-lines:])


def read_rows(run: Run, out_dir: Path, estimator: Estimator | None, now: float) -> None:
    """Append the run's new complete JSON lines to run.rows (and tell the estimator)."""
    path = out_dir / "runs" / f"{run.name}.jsonl"
    try:
        with path.open("rb") as file:
            file.seek(run.read_offset)
            data = file.read()
    except OSError:
        return
    end = data.rfind(b"\n")
    if end < 0:
        return
    run.read_offset += end + 1
    for line in data[:end].splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        run.rows.append(row)
        if estimator is not None:
            if run.first_row_at is None:
                run.first_row_at = now
            estimator.observe(run, row, now)


def last_number(run: Run) -> tuple[str, float | None, int | None]:
    """(measure name, value, epoch) of the run's latest row: its test number if it has one, else validation."""
    base = main_measure(run.group.model)
    for row in reversed(run.rows):
        if "test" in row and isinstance(row["test"], dict):
            return f"test_{base}", row["test"].get(f"test_{base}"), row.get("epoch")
    for row in reversed(run.rows):
        if f"val_{base}" in row:
            return f"val_{base}", row[f"val_{base}"], row.get("epoch")
    return f"val_{base}", None, None


def run_line(run: Run) -> str:
    name, value, epoch = last_number(run)
    number = f"{name} {value:.4f} at epoch {epoch}" if value is not None else "no measurement yet"
    wall = f"{run.wall_seconds:.0f} s" if run.wall_seconds is not None else "-"
    status = {"done": "done   ", "failed": "FAILED ", "killed": "killed "}.get(run.status, run.status)
    extra = f" (exit {run.returncode})" if run.status == "failed" else ""
    extra += " at the budget's end" if run.status == "killed" else ""
    return f"{status}{run.group.name} seed {run.seed}: {number}, {wall}{extra}"


def stop(run: Run, sig: int) -> None:
    try:
        os.killpg(run.process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_sweep(runs: list[Run], *, parallel: int, budget: float, out_dir: Path, save_dir: Path,
              manifest: dict) -> None:
    """Run the queued runs (status "queued") as the module docstring says; statuses are set on the runs."""
    from saae_lib.digit_classifier import judge_path

    started_at = time.monotonic()
    deadline = started_at + budget
    estimator = Estimator(this_device())
    environment = {**os.environ, "OMP_NUM_THREADS": str(max(1, available_cpus() // parallel)),
                   "PYTHONUNBUFFERED": "1"}
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    queue = queue_order([r for r in runs if r.status == "queued"], estimator)
    running: list[Run] = []
    judge = None  # the process training the judge, if one is needed
    judge_ready = True
    if any(needs_judge(r) for r in queue) and not judge_path().is_file():
        judge_ready = False
        judge_log = (out_dir / "logs" / "judge.log").open("w")
        judge = subprocess.Popen([sys.executable, "-c", JUDGE_WARMUP], cwd=ROOT, env=environment, stdout=judge_log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
        print(f"training the judge classifier first ({judge_path()} is not there); the runs that need it wait",
              flush=True)

    def finish(run: Run, status: str) -> None:
        run.ended = time.monotonic()
        read_rows(run, out_dir, estimator, run.ended)
        run.status = status
        run.log_file.close()
        print(run_line(run), flush=True)
        if status == "failed":
            print(log_tail(run, out_dir), flush=True)
        write_summary(runs, out_dir, manifest)

    try:
        while queue or running:
            now = time.monotonic()
            for run in list(running):
                read_rows(run, out_dir, estimator, now)
                if run.process.poll() is not None:
                    run.returncode = run.process.returncode
                    running.remove(run)
                    finish(run, "done" if run.returncode == 0 else "failed")
            if judge is not None and judge.poll() is not None:
                judge_ready = judge.returncode == 0
                if not judge_ready:
                    print(f"FAILED to train the judge classifier (exit {judge.returncode}); see "
                          f"{out_dir / 'logs' / 'judge.log'}", flush=True)
                    for run in [r for r in queue if needs_judge(r)]:
                        queue.remove(run)
                        run.status, run.reason = "failed", "the judge classifier could not be trained"
                        print(f"FAILED {run.group.name} seed {run.seed}: not started, {run.reason}", flush=True)
                judge = None
            now = time.monotonic()
            if now >= deadline:
                break
            while len(running) < parallel:
                run = next((r for r in queue if (judge_ready or not needs_judge(r))
                            and now + estimator.estimate(r) <= deadline), None)
                if run is None:
                    break
                queue.remove(run)
                run.log_file = (out_dir / "logs" / f"{run.name}.log").open("w")
                command = probe_command(run, out_dir, save_dir)
                run.log_file.write(" ".join(command) + "\n")
                run.log_file.flush()
                run.process = subprocess.Popen(command, cwd=ROOT, env=environment, stdout=run.log_file,
                                               stderr=subprocess.STDOUT, start_new_session=True)
                run.started, run.status = time.monotonic(), "running"
                running.append(run)
            if not running and judge is None and queue:
                break  # nothing runs and nothing left fits the budget
            time.sleep(POLL_SECONDS)
    finally:  # the budget's end, or an interruption: stop what still runs, keep its rows
        for run in running:
            stop(run, signal.SIGTERM)
        if judge is not None:
            try:
                os.killpg(judge.pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        limit = time.monotonic() + GRACE_SECONDS
        for run in running:
            try:
                run.process.wait(timeout=max(0.1, limit - time.monotonic()))
            except subprocess.TimeoutExpired:
                stop(run, signal.SIGKILL)
                run.process.wait()
            run.returncode = run.process.returncode
            finish(run, "killed")
        for run in queue:
            run.status, run.reason = "not started", "did not fit in the budget"
            print(f"not started {run.group.name} seed {run.seed}: estimated {estimator.estimate(run):.0f} s, "
                  f"{max(0.0, deadline - time.monotonic()):.0f} s of the budget left", flush=True)


# -- the summary -------------------------------------------------------------------------------------------------
def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "n": len(values), "values": values}


def group_summary(group: Group, runs: list[Run]) -> dict:
    """Per group: the validation numbers at the last epoch and (test stage) the test numbers, over the seeds that
    finished, plus what became of every seed."""
    base = main_measure(group.model)
    done = [r for r in runs if r.status == "done"]
    validation, test = {}, {}
    for run in done:
        final = [row for row in run.rows if row.get("epoch") == run.epochs and "test" not in row]
        if final:
            for key, value in final[-1].items():
                if key.startswith("val_") and isinstance(value, (int, float)) and not isinstance(value, bool):
                    validation.setdefault(key, []).append(value)
        tests = [row["test"] for row in run.rows if isinstance(row.get("test"), dict)]
        if tests:
            for key, value in tests[-1].items():
                if (key.startswith(("test_", "generated_")) and isinstance(value, (int, float))
                        and not isinstance(value, bool)):
                    test.setdefault(key, []).append(value)
    return {
        "stage": group.stage, "model": group.model, "options": group.options, "note": group.note,
        "main_measure": f"val_{base}",
        "seeds": {str(r.seed): {"status": r.status, **({"reason": r.reason} if r.reason else {})} for r in runs},
        "validation": {key: spread(values) for key, values in validation.items()},
        **({"test": {key: spread(values) for key, values in test.items()}} if group.stage == "test" else {}),
    }


def write_summary(runs: list[Run], out_dir: Path, manifest: dict) -> dict:
    groups: dict[str, list[Run]] = {}
    for run in runs:
        groups.setdefault(run.group.name, []).append(run)
    summary = {
        "sweep": manifest,
        "groups": {name: group_summary(members[0].group, members) for name, members in groups.items()},
        "runs": [{"group": r.group.name, "seed": r.seed, "stage": r.group.stage, "status": r.status,
                  **({"reason": r.reason} if r.reason else {}), "exit_code": r.returncode,
                  "wall_seconds": r.wall_seconds, "epochs": r.epochs,
                  "epochs_measured": max([row.get("epoch", 0) for row in r.rows if "test" not in row], default=0),
                  "jsonl": f"runs/{r.name}.jsonl", "log": f"logs/{r.name}.log"} for r in runs],
    }
    temporary = out_dir / "summary.json.tmp"
    temporary.write_text(json.dumps(summary, indent=1) + "\n")
    temporary.replace(out_dir / "summary.json")
    return summary


def print_summary(summary: dict) -> None:
    print("\n== summary: mean ± std over the seeds that finished, at the last epoch ==")
    for name, group in summary["groups"].items():
        statuses = [seed["status"] for seed in group["seeds"].values()]
        counts = ", ".join(f"{statuses.count(s)} {s}" for s in dict.fromkeys(statuses))
        main = group["main_measure"]
        number = group["validation"].get(main)
        text = f"{number['mean']:.4f} ± {number['std']:.4f}" if number else "-"
        print(f"{name:28s} {main} {text}  ({counts})")
        variants = [f"{key.removeprefix(main + '_')} {value['mean']:.4f}" for key, value in group["validation"].items()
                    if key.startswith(main + "_")]
        if variants:
            print(f"{'':28s}   {main}: " + ", ".join(variants))
        if "test" in group:
            test_main = "test_" + main.removeprefix("val_")
            number = group["test"].get(test_main)
            text = f"{number['mean']:.4f} ± {number['std']:.4f}" if number else "-"
            others = ", ".join(f"{key} {value['mean']:.4f}" for key, value in group["test"].items()
                               if key != test_main)
            print(f"{'':28s}   TEST {test_main} {text}" + (f"; {others}" if others else ""))


# -- merging -----------------------------------------------------------------------------------------------------
def canonical(row: dict) -> str:
    return json.dumps(row, sort_keys=True)


def merge(out_dir: Path, probes: Path, commit: str | None = None) -> int:
    """Append the rows of out_dir's runs to `probes`, each with a "probe" note (and the sweep's commit where the
    probe could not read one); rows already in `probes` are skipped. Returns the number of rows added."""
    manifest_path = out_dir / "sweep.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    described = manifest.get("runs", {})
    files = sorted((out_dir / "runs").glob("*.jsonl"))
    if not files:
        raise PlanError(f"{out_dir} holds no runs/*.jsonl: not a sweep's folder")
    present = set()
    if probes.is_file():
        for line in probes.read_text().splitlines():
            try:
                present.add(canonical(json.loads(line)))
            except json.JSONDecodeError:
                continue
    fill = commit or manifest.get("commit") or ""
    added, skipped = [], 0
    for path in files:
        group = described.get(path.stem, {}).get("group", path.stem)
        note = f"python -m benchmarks.sweep, group {group}"
        if manifest.get("parallel"):
            note += f", up to {manifest['parallel']} runs side by side"
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not row.get("commit") and fill:
                row["commit"] = fill
            row.setdefault("probe", note)
            key = canonical(row)
            if key in present:
                skipped += 1
                continue
            present.add(key)
            added.append(row)
    probes.parent.mkdir(parents=True, exist_ok=True)
    with probes.open("a") as file:
        for row in added:
            file.write(json.dumps(row) + "\n")
    print(f"merged {len(added)} rows of {len(files)} runs into {probes} ({skipped} already there)")
    return len(added)


# -- pretrained models -----------------------------------------------------------------------------------------
PRETRAINED_LIMIT_MIB = 56  # what gpu_sweep.sh brings back of them (a device returns 64 MiB in all)


def pretrained_bytes(run: Run) -> int:
    """About the size of the run's exported weights.pt: its model's floating tensors in float16, the rest as they
    are (the model is built on the meta device: no memory is spent on it)."""
    import torch

    from saae_lib.training import build_model

    model = build_model(run.config, torch.device("meta"))
    return sum(value.numel() * (2 if value.is_floating_point() else value.element_size())
               for value in model.state_dict().values())


def one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    name = type(error).__name__
    if not text:
        return name
    return text[0] if name.endswith(("CheckpointError", "PretrainedError", "ExportError")) else f"{name}: {text[0]}"


class ExportError(Exception):
    """A saved run that cannot be exported as it is."""


def export_run(run_name: str, entry: dict, saved: Path, target: Path, status: str | None, manifest: dict) -> dict:
    """Export the saved run at `saved` to `target` (pretrained.export, the time its epochs took), verify the folder
    and return what the summary keeps of it."""
    from saae_lib import pretrained
    from saae_lib.checkpoints import CHECKPOINT_NAME, load_checkpoint

    if not (saved / CHECKPOINT_NAME).is_file():
        raise ExportError(f"no saved run at {saved / CHECKPOINT_NAME} (the run's status: {status or 'unknown'})")
    trainer = load_checkpoint(saved)
    if len(trainer.history) != trainer.config.epochs:
        raise ExportError(f"{saved} trained {len(trainer.history)} of its {trainer.config.epochs} epochs")
    seconds = sum(record["seconds"] for record in trainer.history)
    note = (f"trained by python -m benchmarks.sweep (group {entry['group']}, seed {entry['seed']}) on "
            f"{manifest.get('device', 'its device')}, beside up to {max(0, (manifest.get('parallel') or 1) - 1)} "
            "other probe runs: the epoch times of a shared machine")
    pretrained.export(trainer, target, training_seconds=seconds, name=entry["pretrained"], training_note=note)
    exported = pretrained.verify(target)
    size = sum(path.stat().st_size for path in target.iterdir() if path.is_file())
    base = main_measure(exported["model"])
    return {"run": run_name, "folder": str(target), "bytes": size, "training_seconds": seconds,
            "status": status, f"val_{base}": exported["validation"].get(f"val_{base}"),
            f"test_{base}": exported["test"].get(f"test_{base}")}


def export_pretrained(out_dir: Path, folder: Path) -> int:
    """Export the saved run of each test group of the sweep in `out_dir` that names a pretrained model (its first
    seed, as sweep.json lists it) to folder/NAME, and verify it. One line per model, exported or not, then their
    sizes; what became of each goes into out_dir/summary.json as "pretrained" (the rows are not touched).
    Returns EXIT_OK, or EXIT_EXPORT if any could not be exported."""
    manifest = json.loads((out_dir / "sweep.json").read_text())
    wanted = {name: entry for name, entry in manifest.get("runs", {}).items() if entry.get("pretrained")}
    if not wanted:
        print(f"export: no run of the sweep in {out_dir} is to be exported (a test group names one with "
              "'pretrained')")
        return EXIT_OK
    save_dir = Path(manifest.get("save_dir") or out_dir / "saved")
    summary_path = out_dir / "summary.json"
    try:
        summary = json.loads(summary_path.read_text())
    except (OSError, json.JSONDecodeError):
        summary = None
    statuses = {f"{r['group']}-seed{r['seed']}": r["status"] for r in (summary or {}).get("runs", [])}
    results, failed = {}, []
    for run_name, entry in wanted.items():
        name, started = entry["pretrained"], time.monotonic()
        try:
            results[name] = export_run(run_name, entry, save_dir / run_name, folder / name, statuses.get(run_name),
                                       manifest)
        except Exception as error:  # noqa: BLE001 - whatever it is, one line, and the next model
            results[name] = {"run": run_name, "error": one_line(error)}
            failed.append(name)
            print(f"export failed: {name} ({run_name}): {one_line(error)}", flush=True)
            continue
        numbers = ", ".join(f"{key} {value:.4f}" for key, value in results[name].items()
                            if key.startswith(("val_", "test_")) and isinstance(value, float))
        print(f"exported {name} ({run_name}) to {folder / name}: {results[name]['bytes'] / MB:.1f} MB, verified; "
              f"{numbers} ({time.monotonic() - started:.0f} s)", flush=True)
    sizes = {name: result["bytes"] for name, result in results.items() if "bytes" in result}
    total = sum(sizes.values())
    print(f"pretrained: {len(sizes)} of {len(wanted)} exported, "
          + (", ".join(f"{name} {size / MB:.1f} MB" for name, size in sizes.items()) + "; " if sizes else "")
          + f"{total / MB:.1f} MB in all in {folder}", flush=True)
    if summary is not None:
        summary["pretrained"] = results
        temporary = out_dir / "summary.json.tmp"
        temporary.write_text(json.dumps(summary, indent=1) + "\n")
        temporary.replace(summary_path)
    return EXIT_EXPORT if failed else EXIT_OK


# -- the command -------------------------------------------------------------------------------------------------
def describe(run: Run) -> str:
    group = run.group
    options = " ".join(f"{k}={json.dumps(v, separators=(',', ':'))}" for k, v in group.options.items())
    flags = f"--every {group.every}"
    if group.ema:
        flags += " --ema " + " ".join(f"{d:g}" for d in group.ema)
    if group.recalibrate:
        flags += " --recalibrate"
    if group.stage == "test":
        flags += " --test --save"
        if group.pretrained:
            flags += f" (seed {group.seeds[0]} exported as {group.pretrained})"
    return f"{group.stage:10s} {group.name:28s} {group.model} {options} {flags}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", type=Path, default=PLAN, help=f"the plan (default {PLAN.relative_to(ROOT)})")
    parser.add_argument("--stage", choices=(*STAGES, "all"), default="validation")
    parser.add_argument("--only", nargs="+", metavar="GROUP", help="run these groups only")
    parser.add_argument("--parallel", type=int, default=1, help="probe processes side by side")
    parser.add_argument("--budget-seconds", type=float, default=math.inf,
                        help="start no run that would end after this, kill what runs at its end (default: none)")
    parser.add_argument("--out-dir", type=Path, help="the runs' rows and logs, summary.json")
    parser.add_argument("--save-dir", type=Path, help="where test runs are saved (default OUT_DIR/saved)")
    parser.add_argument("--skip-invalid", action="store_true", help="run the rest when some runs are refused")
    parser.add_argument("--dry-run", action="store_true", help="print the plan and its estimated time only")
    parser.add_argument("--assume-device", choices=tuple(SECONDS_PER_EPOCH),
                        help="the device the dry run estimates for (default: this machine's)")
    parser.add_argument("--merge", type=Path, metavar="OUT_DIR", help="append OUT_DIR's rows to --probes, then stop")
    parser.add_argument("--probes", type=Path, default=PROBES, help="the probes file --merge appends to")
    parser.add_argument("--commit", help="with --merge: the commit of rows that name none (git was missing)")
    parser.add_argument("--export-pretrained", type=Path, metavar="FOLDER",
                        help="export the saved runs of the sweep in --out-dir (default: FOLDER's parent) that its "
                             "plan names a pretrained model for, to FOLDER/NAME; then stop")
    try:
        args = parser.parse_args(argv)
    except SystemExit as error:
        return EXIT_USAGE if error.code else EXIT_OK

    def refuse(message: str) -> int:
        print(f"sweep: {message}", file=sys.stderr)
        return EXIT_USAGE

    if args.export_pretrained is not None:
        out_dir = args.out_dir if args.out_dir is not None else args.export_pretrained.parent
        if not (out_dir / "sweep.json").is_file():
            return refuse(f"{out_dir} holds no sweep.json: not a sweep's folder (--out-dir names it)")
        try:
            return export_pretrained(out_dir.resolve(), args.export_pretrained.resolve())
        except (OSError, json.JSONDecodeError) as error:
            return refuse(f"cannot read the sweep in {out_dir}: {error}")
    if args.merge is not None:
        try:
            merge(args.merge, args.probes, args.commit)
        except (PlanError, OSError, json.JSONDecodeError) as error:
            return refuse(str(error))
        return EXIT_OK
    if args.parallel < 1:
        return refuse("--parallel must be at least 1")
    if not args.budget_seconds > 0:
        return refuse("--budget-seconds must be > 0")
    if not args.dry_run and args.out_dir is None:
        return refuse("--out-dir is needed (or --dry-run, or --merge)")
    try:
        groups = load_plan(args.plan)
    except PlanError as error:
        return refuse(str(error))
    groups = [g for g in groups if args.stage == "all" or g.stage == args.stage]
    if args.only:
        known = {g.name for g in load_plan(args.plan)}
        missing = [name for name in args.only if name not in known]
        if missing:
            return refuse(f"no group named {', '.join(missing)} in {args.plan}")
        outside = [name for name in args.only if name not in {g.name for g in groups}]
        if outside:
            return refuse(f"{', '.join(outside)} not in the {args.stage} stage: use --stage all")
        groups = [g for g in groups if g.name in args.only]
    if not groups:
        return refuse(f"no group of {args.plan} is in the {args.stage} stage")
    runs = plan_runs(groups)
    refused = refusals(runs)
    for run in refused:
        print(f"refused: {run.group.name} seed {run.seed}: {run.reason}")
    stopped = bool(refused) and not args.skip_invalid
    if stopped:
        print(f"sweep: {len(refused)} of {len(runs)} runs refused; "
              f"{'(a real sweep would start nothing)' if args.dry_run else 'nothing started'} "
              "(--skip-invalid runs the rest)", file=sys.stderr)
        if not args.dry_run:
            return EXIT_USAGE
    valid = [r for r in runs if r.status == "queued"]
    if not valid:
        return refuse("every run was refused")

    kind = args.assume_device or this_device()
    if args.dry_run:
        estimator = Estimator(kind)
        for run in runs:
            if run.order == 0:
                seeds = " ".join(map(str, run.group.seeds))
                each = f"~{estimator.estimate(run):.0f} s a run" if run.config is not None else "REFUSED"
                print(f"{describe(run)}  seeds {seeds}, {run.epochs} epochs: {each}")
        total, unstarted = simulate(valid, estimator, args.parallel, args.budget_seconds)
        stages = {s: sum(1 for r in valid if r.group.stage == s) for s in STAGES}
        print(f"{len(runs)} runs in {len(groups)} groups ({', '.join(f'{n} {s}' for s, n in stages.items())}"
              f"{f'; {len(refused)} refused' if refused else ''})")
        print(f"estimate on {kind}: {sum(r.epochs for r in valid)} epochs, "
              f"{sum(estimator.estimate(r) for r in valid):.0f} s of runs, ~{total:.0f} s with --parallel "
              f"{args.parallel} ({SECONDS_PER_EPOCH[kind]} s/epoch, {STARTUP_SECONDS[kind]:.0f} s start, "
              f"{TEST_SECONDS[kind]:.0f} s test measurement)")
        if math.isfinite(args.budget_seconds):
            print(f"budget {args.budget_seconds:.0f} s: " + (f"{len(unstarted)} runs would not start: "
                                                               + ", ".join(r.name for r in unstarted)
                                                               if unstarted else "every run fits"))
        exported = {r.pretrained: pretrained_bytes(r) for r in valid if r.pretrained}
        if exported:
            total = sum(exported.values())
            print("pretrained (--export-pretrained, float16 weights): "
                  + ", ".join(f"{name} ~{size / MB:.1f} MB" for name, size in exported.items())
                  + f"; ~{total / MB:.1f} MB in all"
                  + (f", OVER the {PRETRAINED_LIMIT_MIB} MiB gpu_sweep.sh brings back"
                     if total > PRETRAINED_LIMIT_MIB * 2**20 else ""))
        return EXIT_USAGE if stopped else EXIT_OK

    from saae_lib import settings
    from saae_lib.data import DataError, ensure_mnist_files

    if settings.smoke_mode():
        return refuse("probes measure real runs: unset SAAE_FAST")
    try:
        ensure_mnist_files()  # once here (a download, if needed and possible), not in every probe at once
    except (DataError, OSError) as error:
        return refuse(str(error))
    out_dir = args.out_dir.resolve()
    if (out_dir / "sweep.json").exists():
        return refuse(f"{out_dir} holds a sweep already: choose another --out-dir")
    out_dir.mkdir(parents=True, exist_ok=True)
    save_dir = (args.save_dir or out_dir / "saved").resolve()
    commit, dirty = current_commit()
    manifest = {
        "plan": str(args.plan), "stage": args.stage, "only": args.only, "parallel": args.parallel,
        "budget_seconds": args.budget_seconds if math.isfinite(args.budget_seconds) else None,
        "commit": commit, "uncommitted_changes": dirty, "device": kind,
        "omp_num_threads": max(1, available_cpus() // args.parallel),
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "save_dir": str(save_dir),
        "runs": {r.name: {"group": r.group.name, "seed": r.seed, "stage": r.group.stage,
                          **({"pretrained": r.pretrained} if r.pretrained else {})} for r in runs},
    }
    (out_dir / "sweep.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"sweep of {len(valid)} runs ({len(refused)} refused) on {kind}, {args.parallel} side by side, "
          f"OMP_NUM_THREADS={manifest['omp_num_threads']}, "
          + (f"budget {args.budget_seconds:.0f} s" if math.isfinite(args.budget_seconds) else "no budget")
          + f", into {out_dir}", flush=True)
    started = time.monotonic()
    try:
        run_sweep(runs, parallel=args.parallel, budget=args.budget_seconds, out_dir=out_dir, save_dir=save_dir,
                  manifest=manifest)
    except KeyboardInterrupt:
        print("interrupted: the runs were stopped", file=sys.stderr)
    manifest["wall_seconds"] = time.monotonic() - started
    summary = write_summary(runs, out_dir, manifest)
    print_summary(summary)
    failed = [r for r in runs if r.status == "failed"]
    unfinished = [r for r in runs if r.status in ("killed", "not started", "queued", "running")]
    for run in unfinished:
        print(f"unfinished: {run.name} ({run.status})")
    for run in failed:
        print(f"failed: {run.name}" + (f": {run.reason}" if run.reason else f" (exit {run.returncode}), its log:"))
        if not run.reason:
            print(log_tail(run, out_dir))
    print(f"{sum(r.status == 'done' for r in runs)} of {len(runs)} runs done in {manifest['wall_seconds']:.0f} s; "
          f"summary in {out_dir / 'summary.json'}")
    if failed:
        return EXIT_FAILED
    return EXIT_BUDGET if unfinished else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
