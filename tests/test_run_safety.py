"""Run safety of `python -m saae_lib train`: one writer per --out, --force that never deletes what is not its own
and works across filesystems, metrics.json that always describes the checkpoint beside it, signals, non-finite
results, closed pipes and full disks. Each fault ends in one line, loses nothing and reports nothing false.

In smoke mode with 32-32 hidden layers (test_cli's cli_environment); concurrency and signals use real processes.
"""

import errno
import fcntl
import json
import math
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from saae_lib import cli, evaluation, runs, training
from saae_lib.checkpoints import CHECKPOINT_NAME
from tests.test_cli import ROOT, cli_environment, interrupt_in_epoch, one_line_error, run_main, subprocess_env

pytestmark = pytest.mark.usefixtures("isolated", "fast")
CPU = ["--device", "cpu"]


@pytest.fixture(autouse=True)
def tiny_cli(monkeypatch, session_dirs):
    with cli_environment(monkeypatch, session_dirs):
        yield


def epochs_in(folder: Path) -> int:
    return len(torch.load(folder / CHECKPOINT_NAME, weights_only=True)["history"])


def metrics_in(folder: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")

    return json.loads((folder / "metrics.json").read_text(), parse_constant=refuse)


def train(out, *extra, epochs=1):
    return run_main(["train", "ae", "--out", out, "--epochs", epochs, *CPU, *extra])


def files(folder: Path) -> dict:
    """The files in `folder`, but the lock of a train command that runs there."""
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != runs.LOCK_NAME}


def usage_error(err: str) -> str:
    """The error line of a refused command line (exit 2: argparse's usage line, then one error line)."""
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("usage: "), err
    assert lines[1].startswith("python -m saae_lib: error: ")
    return lines[1]


def copyable_command(line: str) -> list[str]:
    """The command a message tells the user to run (after 'with: '), as the shell would split it."""
    return shlex.split(line.split("with: ", 1)[1].split(", or ")[0])


def default_signals():
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def start_training(out: Path, session_dirs, *extra, epochs=500) -> subprocess.Popen:
    """A real `train` process (signals as in a terminal, whatever this one ignores), once its first epoch is saved."""
    process = subprocess.Popen([sys.executable, "-m", "saae_lib", "train", "ae", "--out", str(out), "--epochs",
                                str(epochs), "--hidden", "64", *CPU, *extra], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=ROOT, env=subprocess_env(session_dirs),
                               preexec_fn=default_signals)
    for line in process.stdout:
        if line.startswith("epoch 1/"):
            return process
    process.kill()
    pytest.fail(f"the training process ended early: {process.communicate()[1]}")


def saae(session_dirs, *argv) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "saae_lib", *map(str, argv)], capture_output=True, text=True,
                          cwd=ROOT, env=subprocess_env(session_dirs), timeout=300)


# -- 1. one writer per --out -----------------------------------------------------------------------------------------
def test_a_second_writer_is_refused_and_the_first_ends_on_sigterm(tmp_path, session_dirs, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    before = files(out)
    # trains in run.partial and holds the lock; epochs it cannot finish before the SIGTERM below, however slow the
    # two refused processes are to start on a busy machine (500 smoke epochs take about 15 s). The exit status 1 a
    # CI run once saw here was a SIGTERM inside torch.save, not an ended run: cli.interrupts_deferred mends that.
    first = start_training(out, session_dirs, "--force", "--seed", "1", epochs=100_000)
    try:
        for argv in (["--force"], ["--resume", "--epochs", "3"]):
            second = saae(session_dirs, "train", "ae", "--out", out, "--epochs", 2, "--hidden", 64, *CPU, *argv)
            assert second.returncode == 2, second.stderr
            line = usage_error(second.stderr)
            assert f"--out {out} is being written by another saae_lib process (pid {first.pid})" in line
            assert "wait for it to end or choose another --out" in line
        assert files(out) == before
        assert (tmp_path / "run.partial" / CHECKPOINT_NAME).is_file()  # the first one's run, untouched
    finally:
        first.send_signal(signal.SIGTERM)  # 6. handled as Ctrl-C, with the status of the signal
        _, err = first.communicate(timeout=120)
    assert first.returncode == 128 + signal.SIGTERM, err  # its stderr says why, where it ended otherwise
    line = one_line_error(err)
    assert line.startswith(f"interrupted (SIGTERM): {out} is unchanged; the new run's ")
    assert f"in {tmp_path / 'run.partial'}; continue it with: " in line
    assert files(out) == before and not (out / runs.LOCK_NAME).exists()
    done = epochs_in(tmp_path / "run.partial")
    assert done >= 1
    # 2. the command it printed continues that --force run and puts it in place of the old one
    command = copyable_command(line)
    assert command[3:] == ["train", "ae", "--out", str(out), "--resume"]
    capsys.readouterr()
    assert run_main([*command[3:], "--epochs", done + 1, *CPU]) == 0
    assert "continuing the unfinished --force run" in capsys.readouterr().out
    assert epochs_in(out) == done + 1 and metrics_in(out)["epochs"] == done + 1
    assert not (tmp_path / "run.partial").exists()


def hold_lock(out: Path, pid: int):
    out.mkdir(parents=True, exist_ok=True)
    handle = os.open(out / runs.LOCK_NAME, os.O_RDWR | os.O_CREAT)
    fcntl.flock(handle, fcntl.LOCK_EX)
    os.write(handle, f"{pid}\n".encode())
    return handle


@pytest.mark.parametrize("argv", [[], ["--force"], ["--resume", "--epochs", "2"]], ids=["train", "force", "resume"])
def test_a_locked_out_is_refused_before_anything_is_touched(argv, tmp_path, capsys):
    out = tmp_path / "run"
    if argv:
        assert train(out) == 0
    before = files(out) if out.exists() else {}
    handle = hold_lock(out, 4242)
    try:
        assert train(out, *argv, epochs=2) == 2
        line = usage_error(capsys.readouterr().err)
        assert f"--out {out} is being written by another saae_lib process (pid 4242): wait for it" in line
        assert files(out) == before and (out / runs.LOCK_NAME).read_bytes() == b"4242\n"
        assert not (tmp_path / "run.partial").exists()
    finally:
        os.close(handle)


def test_a_stale_lock_of_a_dead_process_does_not_block(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / runs.LOCK_NAME).write_text("999999999\n")  # a writer killed with SIGKILL: its flock went with it
    assert train(out) == 0
    assert epochs_in(out) == 1 and not (out / runs.LOCK_NAME).exists()


# -- 2. --force never deletes what is not its own ----------------------------------------------------------------------
def test_force_leaves_a_partial_folder_it_did_not_make(tmp_path, capsys):
    out, partial = tmp_path / "run", tmp_path / "run.partial"
    assert train(out) == 0
    partial.mkdir()
    (partial / "thesis.tex").write_text("years of work")
    before = files(out)
    capsys.readouterr()
    assert train(out, "--force", epochs=2) == 2
    line = usage_error(capsys.readouterr().err)
    assert f"{partial} is in the way" in line and "move it away" in line
    assert (partial / "thesis.tex").read_text() == "years of work" and files(out) == before


def test_force_leaves_files_put_into_its_partial_folder(tmp_path, capsys):
    out, partial = tmp_path / "run", tmp_path / "run.partial"
    assert train(out) == 0
    with interrupt_in_epoch(2):
        assert train(out, "--force", epochs=3) == 130
    (partial / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert train(out, "--force", epochs=2) == 2
    line = usage_error(capsys.readouterr().err)
    assert f"{partial} holds files saae_lib did not write there (notes.txt)" in line
    assert (partial / "notes.txt").read_text() == "mine" and epochs_in(partial) == 1


def test_force_keeps_an_interrupted_force_run(tmp_path, capsys):
    out, partial = tmp_path / "run", tmp_path / "run.partial"
    assert train(out) == 0
    with interrupt_in_epoch(2):
        assert train(out, "--force", "--seed", "1", epochs=3) == 130
    assert "continue it with: python -m saae_lib train ae --out" in one_line_error(capsys.readouterr().err)
    interrupted = torch.load(partial / CHECKPOINT_NAME, weights_only=True)
    assert train(out, "--force", epochs=2) == 0
    note = capsys.readouterr().err.strip()
    kept = tmp_path / "run.interrupted"
    assert f"{partial} held an interrupted --force run of {out} (ae model, 1 of 3 epochs); it is kept as {kept}" in note
    assert epochs_in(out) == 2 and metrics_in(out)["epochs"] == 2 and not partial.exists()
    kept_weights = torch.load(kept / CHECKPOINT_NAME, weights_only=True)["model"]
    assert all(torch.equal(kept_weights[k], interrupted["model"][k]) for k in interrupted["model"])
    # the command the note gives continues it, as an ordinary run folder
    assert run_main([*copyable_command(note)[3:], *CPU]) == 0
    assert epochs_in(kept) == 3 and metrics_in(kept)["epochs"] == 3


# -- 3. --force on any filesystem layout -------------------------------------------------------------------------------
def cross_device(monkeypatch):
    """Renames between two folders fail as they do between two filesystems (EXDEV)."""
    real = os.replace

    def replace(source, target, **kwargs):
        if Path(source).resolve().parent != Path(target).resolve().parent:
            raise OSError(errno.EXDEV, "Invalid cross-device link", str(source), None, str(target))
        return real(source, target, **kwargs)

    monkeypatch.setattr(os, "replace", replace)


def test_force_across_filesystems(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    (out / "notes.txt").write_text("mine")
    cross_device(monkeypatch)
    assert train(out, "--force", epochs=2) == 0
    assert epochs_in(out) == 2 and metrics_in(out)["epochs"] == 2 and (out / "notes.txt").read_text() == "mine"
    assert not (tmp_path / "run.partial").exists()
    assert sorted(p.name for p in out.iterdir()) == ["checkpoint.pt", "metrics.json", "notes.txt"]


def test_force_across_filesystems_on_a_full_disk_keeps_both_runs(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    before = files(out)
    cross_device(monkeypatch)
    real_copy = runs.shutil.copyfileobj

    def full_disk(source, target, length=0):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runs.shutil, "copyfileobj", full_disk)
    capsys.readouterr()
    assert train(out, "--force", epochs=2) == 1
    line = one_line_error(capsys.readouterr().err)
    assert f"cannot move the new run from {tmp_path / 'run.partial'} into {out} (No space left on device)" in line
    assert f"{out} is unchanged; the finished new run is in {tmp_path / 'run.partial'}" in line
    assert "free some space, then finish it with: " in line
    assert files(out) == before  # the old model and its metrics, byte for byte
    monkeypatch.setattr(runs.shutil, "copyfileobj", real_copy)
    assert run_main([*copyable_command(line)[3:], *CPU]) == 0
    assert epochs_in(out) == 2 and metrics_in(out)["epochs"] == 2 and not (tmp_path / "run.partial").exists()


@pytest.fixture
def mount_point(tmp_path):
    """A tmpfs mounted in tmp_path (another filesystem than tmp_path itself), where this sandbox allows it."""
    point = tmp_path / "mounted"
    point.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(point)], capture_output=True,
                              timeout=30)
    except (OSError, subprocess.SubprocessError):
        done = None
    if done is None or done.returncode != 0 or not os.path.ismount(point):
        pytest.skip("cannot mount a tmpfs here")
    try:
        yield point
    finally:
        subprocess.run(["umount", "-l", str(point)], capture_output=True, timeout=30)


def test_force_with_out_a_mount_point(mount_point):
    assert train(mount_point) == 0
    old = metrics_in(mount_point)
    assert train(mount_point, "--force", epochs=2) == 0
    assert epochs_in(mount_point) == 2 and metrics_in(mount_point)["epochs"] == 2 != old["epochs"]
    assert sorted(p.name for p in mount_point.iterdir()) == ["checkpoint.pt", "metrics.json"]
    assert not (mount_point.parent / "mounted.partial").exists()


# -- 4. metrics.json describes the checkpoint beside it, or is not there ---------------------------------------------
def test_an_unfinished_resume_leaves_no_stale_metrics(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    with interrupt_in_epoch(2):  # epoch 2 of the resumed run is saved, epoch 3 interrupted
        assert train(out, "--resume", epochs=4) == 130
    assert epochs_in(out) == 2
    assert not (out / "metrics.json").exists()  # it was the 1-epoch model's
    assert "holds 2 of 4 epochs" in one_line_error(capsys.readouterr().err)


def test_resume_rewrites_metrics_that_describe_another_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert train(out) == 0
    (out / "metrics.json").write_text('{"model": "ae", "epochs": 7, "test_reconstruction_mse": NaN}')  # older saae_lib
    assert train(out, "--resume") == 0
    assert metrics_in(out)["epochs"] == 1


# -- 5. an interrupted final evaluation can be finished -------------------------------------------------------------
@pytest.mark.parametrize("force", [False, True], ids=["train", "force"])
def test_interrupted_final_evaluation_is_finished_by_the_hint(force, tmp_path, monkeypatch, capsys):
    out = tmp_path / "my run's"  # 8. a path the shell must see quoted
    if force:
        assert train(out) == 0
    real = evaluation.test_metrics

    def interrupted(trainer, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(evaluation, "test_metrics", interrupted)
    capsys.readouterr()
    assert train(out, *(["--force"] if force else []), epochs=2) == 130
    line = one_line_error(capsys.readouterr().err)
    if force:
        assert f"{out} is unchanged; the new run's 2 finished epochs are in {out}.partial (all of them, not yet " \
               "evaluated); finish it with: " in line
    else:
        assert f"{out} holds all 2 epochs but no test metrics yet; finish with: " in line
    monkeypatch.setattr(evaluation, "test_metrics", real)
    command = copyable_command(line)
    assert command[3:] == ["train", "ae", "--out", str(out), "--resume"]
    assert run_main(command[3:]) == 0
    assert epochs_in(out) == 2 and metrics_in(out)["epochs"] == 2
    assert not Path(f"{out}.partial").exists()
    assert run_main(command[3:]) == 2  # and now nothing is left to do
    assert "already has 2 epochs" in capsys.readouterr().err


# -- 6. SIGHUP (SIGTERM: with the lock above) --------------------------------------------------------------------------
def test_sighup_is_handled_like_ctrl_c(tmp_path, session_dirs):
    out = tmp_path / "a run"
    process = start_training(out, session_dirs)
    process.send_signal(signal.SIGHUP)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal.SIGHUP
    line = one_line_error(err)
    assert line.startswith(f"interrupted (SIGHUP): {out} holds ")
    done = epochs_in(out)
    assert f"holds {done} of 500 epochs" in line
    assert copyable_command(line)[3:] == ["train", "ae", "--out", str(out), "--resume"]  # 8. quoted
    assert not (out / runs.LOCK_NAME).exists()


# -- 7. non-finite results are never a success ------------------------------------------------------------------------
def test_a_diverging_run_is_an_error_and_saves_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert train(out, "--lr", "1e20", "--batch-size", "3000") == 1
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("error: training diverged (epoch 1: ")
    assert "nothing was saved; lower the learning rates (--lr) or use --precision fp32" in line
    assert not (out / CHECKPOINT_NAME).exists() and not (out / "metrics.json").exists()


def test_a_diverging_resume_keeps_the_last_good_epoch(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    assert train(out) == 0
    before = files(out)
    real = training.Trainer.validate
    monkeypatch.setattr(training.Trainer, "validate", lambda self: {**real(self), "val_reconstruction": math.nan})
    capsys.readouterr()
    assert train(out, "--resume", epochs=3) == 1
    line = one_line_error(capsys.readouterr().err)
    assert "training diverged (epoch 2: val_reconstruction nan)" in line and f"{out} holds 1 of 3 epochs" in line
    assert files(out) == before  # the good epoch and the metrics that describe it


def test_a_non_finite_loss_is_an_error(tmp_path, monkeypatch, capsys):
    def fit(self, *args, **kwargs):
        raise FloatingPointError("non-finite loss in epoch 1")

    monkeypatch.setattr(training.Trainer, "fit", fit)
    assert train(tmp_path / "run") == 1
    line = one_line_error(capsys.readouterr().err)
    assert "training diverged (epoch 1: a non-finite loss): nothing was saved; lower the learning rates" in line


def test_non_finite_test_metrics_are_not_written(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = evaluation.test_metrics
    monkeypatch.setattr(evaluation, "test_metrics", lambda *a, **k: {**real(*a, **k), "prior_match_mmd": math.inf})
    assert train(out) == 1
    printed = capsys.readouterr()
    assert "training diverged (test metrics not finite: prior_match_mmd inf)" in one_line_error(printed.err)
    assert not (out / "metrics.json").exists() and "{" not in printed.out


# -- 9. --out "" -------------------------------------------------------------------------------------------------------
def test_empty_out_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main(["train", "ae", "--out", "", "--epochs", 1]) == 2
    assert "--out is empty" in usage_error(capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


# -- 10. a closed stdout --------------------------------------------------------------------------------------------
def test_closed_stdout_does_not_stop_training(tmp_path, session_dirs):
    out = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "saae_lib", "train", "ae", "--out", str(out), "--epochs", "4",
                                "--hidden", "32", "32", *CPU], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               cwd=ROOT, env=subprocess_env(session_dirs))
    process.stdout.readline()  # as `| head -1` does
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=300) == 0, err
    assert err == ""
    assert epochs_in(out) == 4 and metrics_in(out)["epochs"] == 4


# -- 11. a full disk while saving an epoch ---------------------------------------------------------------------------
def test_full_disk_while_saving_keeps_the_last_good_epoch(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real, calls = cli.save_checkpoint, []

    def save(trainer, path):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(Path(path) / CHECKPOINT_NAME))
        return real(trainer, path)

    monkeypatch.setattr(cli, "save_checkpoint", save)
    assert train(out, epochs=3) == 1
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith(f"error: cannot save epoch 2 in {out} (No space left on device): the last good epoch is "
                           f"kept, {out} holds 1 of 3 epochs; free some space, then continue with: ")
    assert epochs_in(out) == 1 and not (out / "metrics.json").exists()
    monkeypatch.setattr(cli, "save_checkpoint", real)
    assert run_main([*copyable_command(line)[3:], *CPU]) == 0
    assert epochs_in(out) == 3 and metrics_in(out)["epochs"] == 3


def test_the_lock_file_names_its_writer_and_goes_with_it(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with runs.run_lock(out):
        assert (out / runs.LOCK_NAME).read_text() == f"{os.getpid()}\n"
    assert not (out / runs.LOCK_NAME).exists()


def test_a_signal_during_a_checkpoint_save_is_raised_after_it():
    """SIGTERM inside torch.save broke the file (a write error, exit 1, in the floors' torch 2.4): it now waits for
    the block to end, then ends the command as before."""
    finished = []
    with cli.interrupt_signals(), pytest.raises(cli.Interrupted) as caught:
        with cli.interrupts_deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.05)  # where the handler would have raised
            finished.append("saved")
    assert finished == ["saved"] and caught.value.signum == signal.SIGTERM


def test_a_signal_during_the_move_of_a_finished_run_waits_for_it(tmp_path, monkeypatch, capsys):
    """SIGTERM while --force moves its finished run into place: the move ends first (no half-moved run), then the
    command ends as interrupted and says where the new run is."""
    out = tmp_path / "run"
    assert train(out) == 0
    real_replace = cli.replace_run

    def replace_and_get_a_sigterm(partial, target):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # where the handler would have raised
        real_replace(partial, target)

    monkeypatch.setattr(cli, "replace_run", replace_and_get_a_sigterm)
    assert train(out, "--force", "--seed", "1", epochs=2) == 128 + signal.SIGTERM
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith("interrupted (SIGTERM): ") and f"{out} holds the new run (2 epochs)" in line, line
    assert epochs_in(out) == 2 and metrics_in(out)["epochs"] == 2 and not (tmp_path / "run.partial").exists()
    assert torch.load(out / CHECKPOINT_NAME, weights_only=True)["config"]["seed"] == 1


@pytest.mark.parametrize("name", ["SIGTERM", "SIGHUP"])
def test_a_signal_left_at_its_default_action_is_taken_after_the_block(name):
    """Where nothing handles the signal (a library caller, no interrupt_signals), its default action (ending the
    process) waits for the block too, instead of killing the process half-way through a save or a move."""
    code = ("import os, signal\nfrom saae_lib import cli\n"
            f"signal.signal(signal.{name}, signal.SIG_DFL)\n"
            "with cli.interrupts_deferred():\n"
            f"    os.kill(os.getpid(), signal.{name})\n"
            "    print('the block ended', flush=True)\n"
            "print('after the block', flush=True)\n")
    ended = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert ended.returncode == -getattr(signal, name), ended.stderr
    assert ended.stdout == "the block ended\n"
