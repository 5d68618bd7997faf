"""Tests for the command line, `python -m saae_lib {train,evaluate,sample,predict}`, in smoke mode.

Most tests call `saae_lib.cli.main([...])` in-process (fast); two run `python -m saae_lib` as a real subprocess.
The runs trained here use the smoke data set (3000 training, 1000 test images) and one epoch; to fit the suite's
time budget on a small CPU, `cli.TrainConfig` is wrapped so the networks get 32-32 hidden layers instead of
1000-1000 (every other option, and all the CLI code, is the real thing). The judge classifier of the supervised
AAE is trained for real, once, into the session's SAAE_CACHE_DIR.
"""

import contextlib
import functools
import io
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from saae_lib import cli, metrics, settings, training
from saae_lib.checkpoints import CHECKPOINT_NAME, load_checkpoint
from saae_lib.digit_classifier import judge_path
from saae_lib.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]
TEST_SIZE = 1000  # the smoke test set

pytestmark = pytest.mark.usefixtures("isolated", "fast")


def tiny_config(**options):
    """TrainConfig with small hidden layers (the only change to what the CLI asks for)."""
    options.setdefault("hidden", (32, 32))
    return TrainConfig(**options)


@contextlib.contextmanager
def cli_environment(patcher, dirs):
    patcher.setenv("SAAE_CACHE_DIR", str(dirs.cache))
    patcher.setenv("SAAE_RUNS_DIR", str(dirs.runs))
    patcher.setenv("SAAE_DATA_DIR", str(dirs.data))
    patcher.setenv("SAAE_FAST", "1")
    patcher.setattr(cli, "TrainConfig", tiny_config)
    # the real judge and the real function, on 100 instead of 1000 generated digits per label
    patcher.setattr(metrics, "generated_label_accuracy",
                    functools.partial(metrics.generated_label_accuracy, n_per_label=100))
    yield


@pytest.fixture(autouse=True)
def tiny_cli(monkeypatch, session_dirs):
    with cli_environment(monkeypatch, session_dirs):
        yield


@pytest.fixture(scope="module")
def runs(tmp_path_factory, session_dirs):
    """One-epoch smoke runs of five models trained through the CLI: their folders and printed output."""
    base = tmp_path_factory.mktemp("cli_runs")
    outputs = {}
    with pytest.MonkeyPatch.context() as patcher, cli_environment(patcher, session_dirs):
        for model, extra in (("aae", []), ("saae", []), ("semi", ["--labels", "100"]),
                             ("cluster", ["--clusters", "12"]), ("supervised", ["--labels", "100"])):
            printed = io.StringIO()
            with contextlib.redirect_stdout(printed):
                code = cli.main(["train", model, "--out", str(base / model), "--epochs", "1", "--device", "cpu",
                                 *extra])
            outputs[model] = SimpleNamespace(code=code, stdout=printed.getvalue())
    return SimpleNamespace(dirs={m: base / m for m in outputs}, outputs=outputs, judge=session_dirs.cache)


def run_main(argv):
    """main() as the shell sees it: its exit code (argparse errors end in SystemExit)."""
    try:
        return cli.main([str(a) for a in argv])
    except SystemExit as exit_:
        return exit_.code


# -- train --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("model", ["aae", "saae", "semi", "cluster", "supervised"])
def test_train_writes_checkpoint_and_metrics(runs, model):
    out, printed = runs.dirs[model], runs.outputs[model]
    assert printed.code == 0
    assert (out / CHECKPOINT_NAME).is_file()
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["model"] == model and saved["epochs"] == 1
    assert "SMOKE" in saved["smoke"]
    if model != "supervised":  # a classifier alone reconstructs nothing
        assert 0 < saved["test_reconstruction_mse"] < 1
    lines = printed.stdout.strip().splitlines()
    assert "SMOKE RUN" in lines[0]
    assert any(line.startswith("epoch 1/1:") for line in lines)
    assert json.loads(lines[-1]) == saved  # the last line printed is the metrics, as JSON
    state = torch.load(out / CHECKPOINT_NAME, weights_only=True)
    assert state["config"]["model"] == model and state["smoke"] is True and len(state["history"]) == 1


def test_train_metrics_per_model(runs):
    aae = json.loads((runs.dirs["aae"] / "metrics.json").read_text())
    assert aae["prior_match_mmd"] > -0.05
    saae = json.loads((runs.dirs["saae"] / "metrics.json").read_text())
    assert 0 <= saae["generated_label_accuracy"] <= 1
    assert 0.5 < saae["judge_real_test_accuracy"] <= 1  # one smoke epoch still reads most digits
    semi = json.loads((runs.dirs["semi"] / "metrics.json").read_text())
    assert semi["n_labels"] == 100 and 0 <= semi["test_error"] <= 1
    assert "test_error" not in aae and "generated_label_accuracy" not in aae
    cluster = json.loads((runs.dirs["cluster"] / "metrics.json").read_text())
    assert cluster["n_clusters"] == 12 and 0 <= cluster["test_clustering_error"] <= 1
    supervised = json.loads((runs.dirs["supervised"] / "metrics.json").read_text())
    assert supervised["n_labels"] == 100 and 0 <= supervised["test_error"] <= 1


def test_judge_is_cached_in_the_cache_dir(runs):
    path = judge_path()
    assert path.parent == runs.judge and path.is_file()
    assert "smoke" in path.name  # a smoke judge never stands in for the real one


def test_resume_and_force(tmp_path):
    out, straight = tmp_path / "run", tmp_path / "straight"
    assert run_main(["train", "aae", "--out", out, "--epochs", "1", "--device", "cpu"]) == 0
    # --cuda-graph says how to run, not what: a resumed run may change it (off is the CPU's only choice)
    assert run_main(["train", "aae", "--out", out, "--resume", "--epochs", "2", "--device", "cpu",
                     "--cuda-graph", "off"]) == 0
    history = torch.load(out / CHECKPOINT_NAME, weights_only=True)["history"]
    assert [r["epoch"] for r in history] == [1, 2]
    # one line, no traceback: there is no CUDA device to record a graph on
    assert run_main(["train", "aae", "--out", out, "--resume", "--epochs", "3", "--device", "cpu",
                     "--cuda-graph", "on"]) == 2
    # resuming is exact: the same numbers as two epochs in one go
    assert run_main(["train", "aae", "--out", straight, "--epochs", "2", "--device", "cpu"]) == 0
    uninterrupted = torch.load(straight / CHECKPOINT_NAME, weights_only=True)["history"]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in history] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in uninterrupted]
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert run_main(["train", "aae", "--out", out, "--resume", "--epochs", "2"]) == 2  # nothing left to do
    assert run_main(["train", "aae", "--out", out, "--epochs", "1", "--force", "--device", "cpu"]) == 0
    assert len(torch.load(out / CHECKPOINT_NAME, weights_only=True)["history"]) == 1


# -- evaluate, sample, predict --------------------------------------------------------------------------------------
def test_train_options_for_the_fixes(tmp_path):
    """--label-aware (D(z, y)) and --balance reach the training config."""
    assert run_main(["train", "saae", "--out", tmp_path / "saae", "--epochs", "1", "--device", "cpu",
                     "--label-aware"]) == 0
    saae = torch.load(tmp_path / "saae" / CHECKPOINT_NAME, weights_only=True)
    assert saae["config"]["label_aware"] is True
    assert saae["model"]["discriminator.0.weight"].shape[1] == 2 + 10  # z and the one-hot label
    assert run_main(["train", "cluster", "--out", tmp_path / "cluster", "--epochs", "1", "--device", "cpu",
                     "--clusters", "4", "--balance", "2.5"]) == 0
    cluster = torch.load(tmp_path / "cluster" / CHECKPOINT_NAME, weights_only=True)
    assert cluster["config"]["balance"] == 2.5
    assert run_main(["train", "ae", "--out", tmp_path / "ae", "--epochs", "1", "--lr-schedule", "cosine"]) == 0
    assert torch.load(tmp_path / "ae" / CHECKPOINT_NAME, weights_only=True)["config"]["lr_schedule"] == "cosine"


def test_evaluate_prints_one_json_object(runs, capsys):
    assert run_main(["evaluate", runs.dirs["aae"], "--device", "cpu"]) == 0
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1
    result = json.loads(out)
    saved = json.loads((runs.dirs["aae"] / "metrics.json").read_text())
    assert result["model"] == "aae" and result["epochs"] == 1
    assert result["test_reconstruction_mse"] == pytest.approx(saved["test_reconstruction_mse"], rel=1e-5)
    assert result["prior_match_mmd"] == pytest.approx(saved["prior_match_mmd"], rel=1e-5, abs=1e-6)


def test_sample_aae(runs, tmp_path):
    out = tmp_path / "aae.npz"
    assert run_main(["sample", runs.dirs["aae"], "--n", 16, "--out", out]) == 0
    with np.load(out) as arrays:
        assert arrays["images"].dtype == np.uint8 and arrays["images"].shape == (16, 28, 28)
        assert "labels" not in arrays
        assert "SMOKE" in str(arrays["smoke"])


def test_sample_is_seeded(runs, tmp_path):
    paths = [tmp_path / f"{i}.npz" for i in range(3)]
    for path, seed in zip(paths, (0, 0, 1), strict=True):
        assert run_main(["sample", runs.dirs["aae"], "--n", 8, "--out", path, "--seed", seed]) == 0
    first, again, other = (np.load(p)["images"] for p in paths)
    assert np.array_equal(first, again) and not np.array_equal(first, other)


def test_sample_saae_with_a_label(runs, tmp_path):
    out = tmp_path / "threes.npz"
    assert run_main(["sample", runs.dirs["saae"], "--n", 12, "--out", out, "--label", 3]) == 0
    with np.load(out) as arrays:
        assert arrays["images"].dtype == np.uint8 and arrays["images"].shape == (12, 28, 28)
        assert arrays["labels"].shape == (12,) and (arrays["labels"] == 3).all()


def test_sample_semi_with_random_labels(runs, tmp_path):
    out = tmp_path / "semi.npz"
    assert run_main(["sample", runs.dirs["semi"], "--n", 50, "--out", out]) == 0
    with np.load(out) as arrays:
        labels = arrays["labels"]
        assert arrays["images"].shape == (50, 28, 28)
        assert labels.min() >= 0 and labels.max() <= 9 and len(set(labels.tolist())) > 1


@pytest.mark.parametrize("model", ["semi", "supervised", "cluster"])
def test_predict(model, runs, tmp_path, capsys):
    out = tmp_path / "predictions.npy"
    assert run_main(["predict", runs.dirs[model], "--out", out]) == 0
    predicted = np.load(out)
    assert predicted.dtype == np.int64 and predicted.shape == (TEST_SIZE,)
    # cluster ids are mapped to digits (-1 only for a cluster no training image fell into)
    assert predicted.min() >= (-1 if model == "cluster" else 0) and predicted.max() <= 9
    assert f"wrote {TEST_SIZE} predictions" in capsys.readouterr().out


def test_sample_cluster_with_a_category(runs, tmp_path):
    out = tmp_path / "category.npz"
    assert run_main(["sample", runs.dirs["cluster"], "--n", 5, "--out", out, "--label", 11]) == 0
    with np.load(out) as arrays:
        assert arrays["images"].shape == (5, 28, 28) and (arrays["labels"] == 11).all()


# -- help and bad arguments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [[], ["train"], ["evaluate"], ["sample"], ["predict"]])
def test_help_exits_zero(argv, capsys):
    assert run_main([*argv, "--help"]) == 0
    assert "usage:" in capsys.readouterr().out


BAD_ARGUMENTS = {
    "unknown model": ["train", "no-such-model", "--out", "{new}"],
    "zero epochs": ["train", "aae", "--out", "{new}", "--epochs", "0"],
    "prior needs 2-D": ["train", "aae", "--out", "{new}", "--prior", "mixture", "--latent-dim", "3"],
    "labels not a multiple of 10": ["train", "semi", "--out", "{new}", "--labels", "15", "--epochs", "1"],
    "existing run without --force": ["train", "aae", "--out", "{aae}", "--epochs", "1"],
    "resume without checkpoint": ["train", "aae", "--out", "{new}", "--resume"],
    "unknown device": ["evaluate", "{aae}", "--device", "nonsense"],
    "evaluate an empty folder": ["evaluate", "{empty}"],
    "label out of range": ["sample", "{saae}", "--n", "4", "--out", "{new}.npz", "--label", "12"],
    "category out of range": ["sample", "{cluster}", "--n", "4", "--out", "{new}.npz", "--label", "12"],
    "sample a classifier that has no decoder": ["sample", "{supervised}", "--n", "4", "--out", "{new}.npz"],
    "label for an unconditioned model": ["sample", "{aae}", "--n", "4", "--out", "{new}.npz", "--label", "3"],
    "no images": ["sample", "{aae}", "--n", "0", "--out", "{new}.npz"],
    "sample to a non-npz file": ["sample", "{aae}", "--n", "4", "--out", "{new}.png"],
    "predict with an aae": ["predict", "{aae}", "--out", "{new}.npy"],
    "predict to a non-npy file": ["predict", "{semi}", "--out", "{new}.txt"],
    # options a model does not use, and values out of range, are refused up front
    "prior for the ae": ["train", "ae", "--out", "{new}", "--prior", "gaussian"],
    "labels for the aae": ["train", "aae", "--out", "{new}", "--labels", "100"],
    "clusters for the semi model": ["train", "semi", "--out", "{new}", "--clusters", "16"],
    "balance for the aae": ["train", "aae", "--out", "{new}", "--balance", "1"],
    "label-aware for the semi model": ["train", "semi", "--out", "{new}", "--label-aware"],
    "prior-std for the mixture": ["train", "aae", "--out", "{new}", "--prior", "mixture", "--prior-std", "2"],
    "balance nan": ["train", "cluster", "--out", "{new}", "--balance", "nan"],
    "negative labels": ["train", "semi", "--out", "{new}", "--labels", "-10"],
    "infinite learning rate": ["train", "ae", "--out", "{new}", "--lr", "inf"],
    "validation split of every image": ["train", "ae", "--out", "{new}", "--validation-size", "60000"],
    "no hidden width": ["train", "ae", "--out", "{new}", "--hidden", "0"],
    # --resume continues the run that is there, as it is
    "resume another model": ["train", "semi", "--out", "{aae}", "--resume", "--epochs", "5"],
    "resume with another prior": ["train", "aae", "--out", "{aae}", "--resume", "--prior", "mixture", "--epochs", "5"],
    "resume with another batch size": ["train", "aae", "--out", "{aae}", "--resume", "--batch-size", "7"],
    "resume and force": ["train", "aae", "--out", "{aae}", "--resume", "--force"],
    # --out is checked before any data is loaded
    "out is a file": ["train", "ae", "--out", "{file}"],
    "out below a file": ["train", "ae", "--out", "{file}/run"],
    "sample out below a file": ["sample", "{aae}", "--n", "4", "--out", "{file}/x.npz"],
    # encode and sample
    "encode a classifier": ["encode", "{supervised}", "--out", "{new}.npz"],
    "encode to a non-npz file": ["encode", "{aae}", "--out", "{new}.npy"],
    "sample more images than fit in memory": ["sample", "{aae}", "--n", "50000000000", "--out", "{new}.npz"],
    "sample with a seed out of range": ["sample", "{aae}", "--n", "4", "--out", "{new}.npz", "--seed", str(2**70)],
}
if not torch.cuda.is_available():
    BAD_ARGUMENTS["cuda without CUDA"] = ["train", "aae", "--out", "{new}", "--device", "cuda"]


@pytest.mark.parametrize("argv", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_bad_arguments_exit_2_with_a_message(argv, runs, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "afile").write_text("not a folder")
    places = {m: str(d) for m, d in runs.dirs.items()}
    places |= {"new": str(tmp_path / "new"), "empty": str(tmp_path / "empty"), "file": str(tmp_path / "afile")}
    before = sorted(p.name for p in runs.dirs["aae"].iterdir())
    # an exception escaping main() would be a traceback for the user: it fails this test
    assert run_main([arg.format(**places) for arg in argv]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert not any(p.name.startswith("new") for p in tmp_path.iterdir())  # nothing written
    assert sorted(p.name for p in runs.dirs["aae"].iterdir()) == before
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.parametrize("argv, message", [
    (["train", "ae", "--prior", "gaussian"], "--prior is not used by the ae model (it is used by aae, saae)"),
    (["train", "aae", "--labels", "100"], "--labels is not used by the aae model (it is used by semi, supervised)"),
    (["train", "cluster", "--balance", "nan"], "--balance must be a finite number >= 0, got nan"),
    (["train", "semi", "--labels", "-10"], "--labels must be an integer in [10, 60000], got -10"),
    (["train", "aae", "--prior", "mixture", "--prior-std", "2"], "prior_std sets the spread of the gaussian prior"),
])
def test_refused_options_are_named(argv, message, tmp_path, capsys):
    assert run_main([*argv, "--out", tmp_path / "new"]) == 2
    assert message in capsys.readouterr().err


def test_existing_sample_needs_force(runs, tmp_path):
    out = tmp_path / "taken.npz"
    out.write_bytes(b"keep me")
    assert run_main(["sample", runs.dirs["aae"], "--n", 4, "--out", out]) == 2
    assert out.read_bytes() == b"keep me"
    assert run_main(["sample", runs.dirs["aae"], "--n", 4, "--out", out, "--force"]) == 0
    assert np.load(out)["images"].shape == (4, 28, 28)


# -- the real command ---------------------------------------------------------------------------------------------
def subprocess_env(session_dirs):
    return {**os.environ, "SAAE_FAST": "1", "SAAE_DATA_DIR": str(session_dirs.data),
            "SAAE_CACHE_DIR": str(session_dirs.cache), "SAAE_RUNS_DIR": str(session_dirs.runs),
            "OMP_NUM_THREADS": "1"}


def test_python_dash_m_evaluate(runs, session_dirs):
    result = subprocess.run([sys.executable, "-m", "saae_lib", "evaluate", str(runs.dirs["aae"]), "--device", "cpu"],
                            capture_output=True, text=True, cwd=ROOT, env=subprocess_env(session_dirs), timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1
    assert json.loads(lines[0])["model"] == "aae"


def test_python_dash_m_bad_arguments(session_dirs, tmp_path):
    result = subprocess.run([sys.executable, "-m", "saae_lib", "train", "aae", "--out", str(tmp_path / "x"),
                             "--epochs", "0"],
                            capture_output=True, text=True, cwd=ROOT, env=subprocess_env(session_dirs), timeout=300)
    assert result.returncode == 2
    assert "usage:" in result.stderr and "--epochs" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


# -- faults: each ends in one line and an exit code, and loses nothing --------------------------------------------
def one_line_error(err: str) -> str:
    """The error output of a failed command: exactly one line, no traceback, no advice to load unsafely."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err and "weights_only" not in err
    return lines[0]


@contextlib.contextmanager
def interrupt_in_epoch(epoch):
    """Ctrl-C while epoch `epoch` runs (its validation never ends, so its checkpoint is never written)."""
    real, calls = training.Trainer.validate, []

    def validate(self):
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(self)

    with pytest.MonkeyPatch.context() as patcher:
        patcher.setattr(training.Trainer, "validate", validate)
        yield


def run_files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_force_interrupted_keeps_the_old_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(["train", "ae", "--out", out, "--epochs", "1", "--device", "cpu"]) == 0
    (out / "notes.txt").write_text("mine")
    before = run_files(out)
    capsys.readouterr()
    with interrupt_in_epoch(2):
        code = run_main(["train", "ae", "--out", out, "--epochs", "3", "--force", "--device", "cpu", "--seed", "1"])
    assert code == 130
    line = one_line_error(capsys.readouterr().err)
    assert f"{out} is unchanged" in line and f"the new run's 1 finished epoch is in {tmp_path / 'run.partial'}" in line
    assert run_files(out) == before  # the old model, its metrics and the user's file, byte for byte
    # the next --force run replaces the model and its metrics, and leaves the user's file alone
    assert run_main(["train", "ae", "--out", out, "--epochs", "2", "--force", "--device", "cpu"]) == 0
    assert (out / "notes.txt").read_text() == "mine"
    assert len(torch.load(out / CHECKPOINT_NAME, weights_only=True)["history"]) == 2
    assert json.loads((out / "metrics.json").read_text())["epochs"] == 2
    assert not (tmp_path / "run.partial").exists()


def test_interrupted_run_resumes_exactly(tmp_path, capsys):
    out, straight = tmp_path / "run", tmp_path / "straight"
    with interrupt_in_epoch(2):
        assert run_main(["train", "aae", "--out", out, "--epochs", "3", "--device", "cpu"]) == 130
    line = one_line_error(capsys.readouterr().err)
    assert f"{out} holds 1 of 3 epochs" in line and "--resume" in line
    assert not (out / "metrics.json").exists()
    assert run_main(["train", "aae", "--out", out, "--resume", "--device", "cpu"]) == 0  # up to the 3 asked for
    assert run_main(["train", "aae", "--out", straight, "--epochs", "3", "--device", "cpu"]) == 0
    resumed, uninterrupted = (torch.load(d / CHECKPOINT_NAME, weights_only=True) for d in (out, straight))
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed["history"]] == [
        {k: v for k, v in r.items() if k != "seconds"} for r in uninterrupted["history"]]
    assert all(torch.equal(resumed["model"][k], uninterrupted["model"][k]) for k in uninterrupted["model"])


def test_ctrl_c_in_any_command_exits_130(runs, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "load_checkpoint", interrupted)
    assert run_main(["evaluate", runs.dirs["aae"]]) == 130
    assert one_line_error(capsys.readouterr().err) == "interrupted"


def damage(path, how):
    good = path.read_bytes()
    if how == "random bytes":
        path.write_bytes(os.urandom(5000))
    elif how == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif how == "truncated early":  # torch reports this one as an OSError (EINVAL), not as a damaged archive
        path.write_bytes(good[:20000])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "foreign tensors":
        torch.save({"weights": torch.zeros(3)}, path)
    elif how == "foreign object":
        torch.save({"config": SimpleNamespace(model="aae")}, path)  # weights_only cannot load it
    else:
        state = torch.load(path, weights_only=True)
        if how == "other shapes":
            state["config"]["hidden"] = (16, 16)
        elif how == "unknown model":
            state["config"]["model"] = "no-such-model"
        elif how == "unknown option":
            state["config"]["temperature"] = 1.0
        elif how == "missing optimizer":
            state["optimizers"].pop("generator")
        torch.save(state, path)


DAMAGES = ["random bytes", "truncated", "truncated early", "empty", "foreign tensors", "foreign object",
           "other shapes", "unknown model", "unknown option", "missing optimizer"]


@pytest.mark.parametrize("how", DAMAGES)
def test_damaged_checkpoint_is_one_line_naming_the_file(how, runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs.dirs["aae"], run)
    damage(run / CHECKPOINT_NAME, how)
    assert run_main(["evaluate", run]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("error: ") and str(run / CHECKPOINT_NAME) in line
    assert "train the model again" in line or "train one first" in line
    # resuming or sampling from it ends the same way
    assert run_main(["sample", run, "--n", "4", "--out", tmp_path / "s.npz"]) == 1
    assert str(run / CHECKPOINT_NAME) in one_line_error(capsys.readouterr().err)
    assert not (tmp_path / "s.npz").exists()


def test_damaged_checkpoint_in_a_real_process(runs, session_dirs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs.dirs["aae"], run)
    damage(run / CHECKPOINT_NAME, "truncated")
    result = subprocess.run([sys.executable, "-m", "saae_lib", "evaluate", str(run)], capture_output=True, text=True,
                            cwd=ROOT, env=subprocess_env(session_dirs), timeout=300)
    assert result.returncode == 1
    assert str(run / CHECKPOINT_NAME) in one_line_error(result.stderr)


def test_ctrl_c_in_a_real_process(session_dirs, tmp_path):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "saae_lib", "train", "ae", "--out", str(out), "--epochs", "500",
                                "--hidden", "64", "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=ROOT, env=subprocess_env(session_dirs),
                               # a test run started as a background job inherits SIGINT ignored: give Ctrl-C back
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in process.stdout:  # wait until the first epoch is saved
        if line.startswith("epoch 1/500"):
            break
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130
    assert "--resume" in one_line_error(err)
    assert len(torch.load(out / CHECKPOINT_NAME, weights_only=True)["history"]) >= 1


def test_disk_error_while_writing_keeps_the_old_run(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert run_main(["train", "ae", "--out", out, "--epochs", "1", "--device", "cpu"]) == 0
    before = run_files(out)
    capsys.readouterr()

    def full_disk(text, path):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(cli, "atomic_write_text", full_disk)
    assert run_main(["train", "ae", "--out", out, "--epochs", "2", "--force", "--device", "cpu"]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "No space left on device" in line and "metrics.json" in line
    assert run_files(out) == before


def test_networks_too_large_for_memory(tmp_path, capsys):
    assert run_main(["train", "ae", "--out", tmp_path / "run", "--hidden", "2000000000", "--device", "cpu"]) == 1
    assert "out of memory" in one_line_error(capsys.readouterr().err)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_is_refused_before_any_work(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    assert run_main(["train", "ae", "--out", locked / "run", "--epochs", "1"]) == 2
    assert "cannot be written" in capsys.readouterr().err


def test_smoke_checkpoint_says_so_outside_smoke_mode(runs, monkeypatch, capsys):
    monkeypatch.setenv("SAAE_FAST", "0")
    assert run_main(["evaluate", runs.dirs["aae"]]) == 0
    assert json.loads(capsys.readouterr().out)["smoke"] == settings.SMOKE_NOTE


def test_data_folder_one_level_too_deep(raw_copy, tmp_path, monkeypatch, capsys):
    root, raw = raw_copy
    before = sorted(p.name for p in raw.iterdir())
    monkeypatch.setenv("SAAE_DATA_DIR", str(raw))
    assert run_main(["train", "ae", "--out", tmp_path / "run", "--epochs", "1"]) == 1
    line = one_line_error(capsys.readouterr().err)
    assert f"point SAAE_DATA_DIR (or root=) at {root}" in line
    assert sorted(p.name for p in raw.iterdir()) == before  # nothing created inside


@pytest.mark.parametrize("model, dim", [("aae", 2), ("semi", 10), ("cluster", 5)])
def test_encode_writes_the_test_codes(model, dim, runs, tmp_path):
    out = tmp_path / "codes.npz"
    assert run_main(["encode", runs.dirs[model], "--out", out]) == 0
    arrays = np.load(out)
    assert arrays["codes"].dtype == np.float32 and arrays["codes"].shape == (TEST_SIZE, dim)
    assert arrays["labels"].dtype == np.int64 and arrays["labels"].shape == (TEST_SIZE,)
    assert "SMOKE" in str(arrays["smoke"])
    trainer = load_checkpoint(runs.dirs[model])
    assert np.array_equal(arrays["labels"], trainer.data.test_labels.numpy())
    np.testing.assert_allclose(arrays["codes"], metrics.encode(trainer.model, trainer.data.test_images).numpy())


def test_sample_decodes_in_chunks(runs, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "SAMPLE_CHUNK", 7)
    assert run_main(["sample", runs.dirs["saae"], "--n", 20, "--out", tmp_path / "s.npz"]) == 0
    arrays = np.load(tmp_path / "s.npz")
    assert arrays["images"].shape == (20, 28, 28) and arrays["labels"].shape == (20,)
    assert len(set(arrays["labels"].tolist())) > 1  # random labels drawn for every chunk


def test_a_full_recipe_on_a_cpu_says_how_to_train_the_quick_one():
    from saae_lib.cli import recipe_hint
    cpu = torch.device("cpu")
    hint = recipe_hint(TrainConfig(model="semi").resolved(smoke=False), cpu)
    assert "150 epochs" in hint and "--recipe quick trains 40" in hint
    assert recipe_hint(TrainConfig(model="semi", recipe="quick").resolved(smoke=False), cpu) is None
    assert recipe_hint(TrainConfig(model="aae").resolved(smoke=False), cpu) is None  # one recipe
