"""Checkpoints that survive faults: writes flushed to disk, leftovers of killed runs removed, a full disk reported in
one line, flipped bytes and crafted files refused before they cost memory, newer formats refused, train_or_load
never reusing a run of other data nor writing outside the runs folder, and a damaged judge cache retrained."""

import errno
import json
import os
import resource
import shutil
import stat
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from saae_lib import checkpoints, cli, digit_classifier, training
from saae_lib.checkpoints import (
    CHECKPOINT_NAME,
    FORMAT,
    CheckpointError,
    DamagedCheckpoint,
    atomic_save,
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    train_or_load,
)
from saae_lib.data import MNIST

pytestmark = pytest.mark.usefixtures("isolated")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tiny_mnist):
    """A one-epoch tiny AE (trained once for the module)."""
    return training.train("ae", data=tiny_mnist, epochs=1, progress=False, hidden=(32, 32), batch_size=100,
                          precision="fp32", device="cpu")


@pytest.fixture
def saved(trained, tmp_path):
    """The path of a checkpoint of `trained`, written by save_checkpoint."""
    return save_checkpoint(trained, tmp_path / "run")


def temporaries(folder: Path) -> list[str]:
    return sorted(name for name in os.listdir(folder) if name.endswith(".tmp"))


def same(a, b) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape and \
            a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def rewrite(path: Path, change) -> None:
    state = torch.load(path, weights_only=True)
    change(state)
    torch.save(state, path)


def data_offset(raw: bytes, record: zipfile.ZipInfo) -> int:
    """Where a record's bytes start (after its local header)."""
    start = record.header_offset
    name_length = int.from_bytes(raw[start + 26:start + 28], "little")
    extra_length = int.from_bytes(raw[start + 28:start + 30], "little")
    return start + 30 + name_length + extra_length


def flipped(raw: bytes, position: int) -> bytes:
    return raw[:position] + bytes([raw[position] ^ 0x5A]) + raw[position + 1:]


# -- 1. flushed to disk before the rename --------------------------------------------------------------------------
def test_the_file_is_on_disk_before_the_rename_and_the_folder_after(monkeypatch, tmp_path, trained):
    real, calls = os.fsync, []
    target = tmp_path / "run" / CHECKPOINT_NAME

    def fsync(fd):
        mode = os.fstat(fd).st_mode
        calls.append((stat.S_ISDIR(mode), os.fstat(fd).st_size, target.exists()))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    save_checkpoint(trained, tmp_path / "run")
    size = target.stat().st_size
    assert calls == [(False, size, False),  # the whole file, flushed, before it is renamed into place
                     (True, calls[1][1], True)]  # then the folder, after the rename


def test_a_folder_that_refuses_fsync_is_fine(monkeypatch, tmp_path, trained):
    real = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    path = save_checkpoint(trained, tmp_path)
    assert read_checkpoint(path)[1]["model"] == "ae"


def test_a_failed_fsync_keeps_the_old_checkpoint(monkeypatch, saved, trained):
    before = saved.read_bytes()

    def fsync(fd):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError) as caught:
        save_checkpoint(trained, saved)
    assert caught.value.errno == errno.EIO and caught.value.filename == str(saved)
    assert saved.read_bytes() == before and temporaries(saved.parent) == []


# -- 2. temporary files of killed runs ---------------------------------------------------------------------------
def test_temporary_files_of_killed_writers_are_removed(tmp_path, trained):
    folder = tmp_path / "run"
    folder.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        old = 1_000_000_000  # 2001
        files = {
            f".{CHECKPOINT_NAME}.{dead.pid}-abcd1234.tmp": (old, False),  # its writer is gone
            f".{CHECKPOINT_NAME}.{dead.pid}-zz_9zz9z.tmp": (old, False),
            f".{CHECKPOINT_NAME}.k3j4h5g6.tmp": (old, False),  # an older name without a pid, from before this run
            f".{CHECKPOINT_NAME}.{alive.pid}-abcd1234.tmp": (old, True),  # its writer still runs
            f".{CHECKPOINT_NAME}.{dead.pid}-fresh123.tmp": (None, True),  # just written: maybe another machine's
            f".metrics.json.{dead.pid}-abcd1234.tmp": (old, True),  # another file's: not this write's business
            f".{CHECKPOINT_NAME}.notes": (old, True),  # not a temporary file at all
            f".{CHECKPOINT_NAME}.12-x.tmp": (old, True),
        }
        for name, (mtime, _) in files.items():
            (folder / name).write_bytes(b"x" * 1000)
            if mtime is not None:
                os.utime(folder / name, (mtime, mtime))
        save_checkpoint(trained, folder)
        kept = {name for name, (_, keep) in files.items() if keep}
        assert set(os.listdir(folder)) == kept | {CHECKPOINT_NAME}
    finally:
        alive.kill()
        alive.wait()


def test_the_temporary_name_carries_the_writers_pid(tmp_path):
    seen = []

    def write(file):
        seen.extend(temporaries(tmp_path))
        file.write(b"data")

    checkpoints.atomic_write(tmp_path / "file.bin", write)
    assert len(seen) == 1 and checkpoints.temporary_pid(seen[0], "file.bin") == os.getpid()
    assert os.listdir(tmp_path) == ["file.bin"] and (tmp_path / "file.bin").read_bytes() == b"data"


# -- 3. a full disk ----------------------------------------------------------------------------------------------
@pytest.fixture
def small_disk(tmp_path):
    """A real 1 MiB filesystem (tmpfs), unmounted afterwards; skipped where mounting is not permitted."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True,
                            text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {result.stderr.strip()}")
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


def test_a_full_disk_is_one_clear_oserror_and_the_old_file_survives(small_disk):
    path = small_disk / "state.pt"
    atomic_save({"w": torch.zeros(50_000)}, path)  # 200 kB of a 1 MiB disk
    failures = 0
    for n in (200_000, 262_144, 300_000, 1_000_000, 5_000_000):  # 0.8 to 20 MB: at or past what is left
        before = path.read_bytes()
        try:
            atomic_save({"w": torch.ones(n)}, path)
        except OSError as error:
            failures += 1
            assert (error.errno, error.strerror, error.filename) == (errno.ENOSPC, "No space left on device",
                                                                     str(path)), repr(error)
            assert path.read_bytes() == before  # byte for byte
        else:
            assert torch.load(path, weights_only=True)["w"].numel() == n
        assert os.listdir(small_disk) == ["state.pt"]  # no temporary file left behind
    assert failures >= 4


def test_a_full_disk_in_the_command_line_is_one_line(monkeypatch, small_disk, session_dirs, capsys):
    monkeypatch.setenv("SAAE_FAST", "1")
    out = small_disk / "run"
    code = cli.main(["train", "ae", "--out", str(out), "--epochs", "1", "--hidden", "64", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert err == [f"error: cannot save epoch 1 in {out} (No space left on device): nothing was saved; free some "
                   "space, then train again"]
    assert not out.exists()  # nothing was saved: no temporary file, and no empty folder, is left behind


LIMITED_SAVE = textwrap.dedent("""
    import json, resource, signal, sys
    import torch
    from saae_lib.checkpoints import atomic_save
    path, limit, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    try:
        atomic_save({"w": torch.ones(n)}, path)
        print(json.dumps(None))
    except OSError as error:
        print(json.dumps([error.errno, error.strerror, error.filename]))
""")


def test_a_file_size_limit_is_one_clear_oserror(tmp_path):
    path = tmp_path / "state.pt"
    atomic_save({"w": torch.zeros(1000)}, path)
    before = path.read_bytes()
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "OMP_NUM_THREADS": "1"}
    for n in (100_000, 1_000_000):  # 0.4 and 4 MB, limit 64 kB
        result = subprocess.run([sys.executable, "-c", LIMITED_SAVE, str(path), str(65536), str(n)],
                                capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout.strip().splitlines()[-1]) == [errno.EFBIG, "File too large", str(path)]
        assert path.read_bytes() == before and temporaries(tmp_path) == []


def test_other_runtime_errors_of_torch_save_are_not_disguised(monkeypatch, tmp_path):
    def broken(obj, file):
        raise RuntimeError("something else entirely")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(RuntimeError, match="something else"):
        atomic_save({}, tmp_path / "x.pt")
    assert os.listdir(tmp_path) == []


# -- 4. flipped bytes ----------------------------------------------------------------------------------------------
CRC_SWITCH = pytest.mark.skipif(not hasattr(torch.serialization, "set_crc32_options"),
                                reason="this torch has no set_crc32_options: it always writes CRC-32s")


@CRC_SWITCH
def test_torch_save_writes_a_crc_for_every_record_even_when_switched_off(tmp_path):
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        atomic_save({"w": torch.randn(1000), "n": 3}, tmp_path / "x.pt")
        assert torch.serialization.get_crc32_options() is False  # the caller's choice, restored
    finally:
        torch.serialization.set_crc32_options(before)
    with zipfile.ZipFile(tmp_path / "x.pt") as archive:
        assert all(record.CRC for record in archive.infolist())
        assert archive.testzip() is None


def test_a_flipped_byte_in_any_record_is_damage(saved):
    raw = saved.read_bytes()
    with zipfile.ZipFile(saved) as archive:
        records = archive.infolist()
    for record in records:
        start = data_offset(raw, record)
        for position in sorted({start, start + record.file_size // 2, start + record.file_size - 1}):
            saved.write_bytes(flipped(raw, position))
            with pytest.raises(DamagedCheckpoint) as caught:
                load_checkpoint(saved)
            message = str(caught.value)
            assert message.startswith(f"{saved} is damaged (record {record.filename} fails its CRC-32 check")
            assert "train the model again" in message and "\n" not in message


def test_a_flipped_byte_anywhere_is_refused_or_harmless(saved):
    """Bytes outside the records (zip headers, timestamps, padding) either break the archive or change nothing."""
    raw = saved.read_bytes()
    original = torch.load(saved, weights_only=True)
    refused = 0
    for position in range(0, len(raw), 499):
        saved.write_bytes(flipped(raw, position))
        try:
            state, _ = read_checkpoint(saved)
        except CheckpointError as error:
            refused += 1
            assert str(saved) in str(error) and "train the model again" in str(error)
        else:
            assert same(state, original), position
    assert refused > 0.9 * len(range(0, len(raw), 499))


@CRC_SWITCH
def test_a_file_saved_without_crcs_still_loads(tmp_path, trained, tiny_mnist):
    before = torch.serialization.get_crc32_options()
    torch.serialization.set_crc32_options(False)
    try:
        torch.save({**trained.state_dict(), "format": FORMAT}, tmp_path / CHECKPOINT_NAME)
    finally:
        torch.serialization.set_crc32_options(before)
    assert load_checkpoint(tmp_path, data=tiny_mnist).history == trained.history


# -- 5. bounded memory ---------------------------------------------------------------------------------------------
def copy_archive(source: Path, target: Path, replace=None) -> None:
    """Copy a torch archive record by record, with `replace(writer, record, data) -> bool` writing some records."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as new:
        for record in old.infolist():
            data = old.read(record)
            if replace is None or not replace(new, record, data):
                new.writestr(record.filename, data)


def test_a_deflate_bomb_is_refused_before_torch_load(monkeypatch, saved, tmp_path):
    bomb = tmp_path / "bomb.pt"

    def big_deflated(writer, record, data):
        if not record.filename.endswith("/data/0"):
            return False
        info = zipfile.ZipInfo(record.filename)
        info.compress_type = zipfile.ZIP_DEFLATED
        with writer.open(info, "w") as stream:
            for _ in range(100):
                stream.write(bytes(1 << 20))  # 100 MiB of zeros, deflated to about 100 kB
        return True

    copy_archive(saved, bomb, big_deflated)
    assert bomb.stat().st_size < 1 << 20
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must not see this file"))
    with pytest.raises(DamagedCheckpoint) as caught:
        read_checkpoint(bomb)
    assert str(caught.value).startswith(f"{bomb} is damaged (record ")
    assert "is compressed" in str(caught.value) and "train the model again" in str(caught.value)


def patch_central_sizes(path: Path, name: str, size: int) -> None:
    """Make the central directory say that record `name` holds `size` bytes (stored)."""
    raw = bytearray(path.read_bytes())
    start = raw.index(b"PK\x01\x02")
    while start >= 0:
        name_length = int.from_bytes(raw[start + 28:start + 30], "little")
        if raw[start + 46:start + 46 + name_length].decode() == name:
            raw[start + 20:start + 24] = size.to_bytes(4, "little")
            raw[start + 24:start + 28] = size.to_bytes(4, "little")
            path.write_bytes(bytes(raw))
            return
        start = raw.find(b"PK\x01\x02", start + 46)
    raise AssertionError(f"no record {name}")


def test_records_larger_than_the_file_are_refused(monkeypatch, saved):
    with zipfile.ZipFile(saved) as archive:
        records = {record.filename: record for record in archive.infolist()}
    weights = next(name for name in records if name.endswith("/data/0"))
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load must not see this file"))

    patch_central_sizes(saved, weights, 2_000_000_000)
    with pytest.raises(DamagedCheckpoint, match=r"declares 2,000,000,000 bytes in a file of"):
        read_checkpoint(saved)

    biggest = max(records.values(), key=lambda record: record.file_size)
    others = [name for name in records if name != biggest.filename]
    for name in others[:3]:  # each no larger than the file, together far larger
        patch_central_sizes(saved, name, biggest.file_size)
    patch_central_sizes(saved, weights, records[weights].file_size)
    with pytest.raises(DamagedCheckpoint, match=r"its records declare [\d,]+ bytes in all in a file of"):
        read_checkpoint(saved)


def test_a_huge_model_in_a_small_file_is_refused_before_it_is_built(monkeypatch, saved):
    rewrite(saved, lambda state: state["config"].update(hidden=(60000, 60000)))  # 14 GB of weights, if built
    assert saved.stat().st_size < 1 << 20

    def never(*args, **kwargs):
        raise AssertionError("no Trainer may be built for weights that do not fit")

    monkeypatch.setattr(checkpoints, "Trainer", never)
    rng = torch.random.get_rng_state()
    memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(DamagedCheckpoint) as caught:
        load_checkpoint(saved)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - memory < 200_000  # kB
    assert torch.equal(torch.random.get_rng_state(), rng)  # building on the meta device drew nothing
    message = str(caught.value)
    assert message.startswith(f"{saved} is damaged: its weights do not fit the ae model its configuration describes (")
    assert "x784 in the file, its configuration makes it 60000x784" in message or \
        "32 in the file, its configuration makes it 60000" in message
    assert message.endswith(checkpoints.RETRAIN)


@pytest.mark.parametrize("change, match", [
    (lambda s: s["model"].pop(next(iter(s["model"]))), r"\(\S+ is missing\)"),
    (lambda s: s["model"].update(extra=torch.zeros(2)), r"\(extra is not part of it\)"),
    (lambda s: s.update(model=[1, 2]), "its weights are not a table of tensors"),
])
def test_weights_are_compared_with_the_configuration(change, match, saved):
    rewrite(saved, change)
    with pytest.raises(DamagedCheckpoint, match=match):
        read_checkpoint(saved)


# -- 6. formats ----------------------------------------------------------------------------------------------------
def test_a_newer_format_is_refused_naming_both_versions(saved):
    rewrite(saved, lambda state: state.update(format=99, something_new=1))
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(saved)
    assert str(caught.value) == (f"{saved} was written by a newer saae_lib (checkpoint format 99; this version reads "
                                 f"up to {FORMAT}): upgrade saae_lib (pip install -U saae-lib)")


def test_resume_leaves_a_newer_format_untouched(monkeypatch, saved, capsys):
    rewrite(saved, lambda state: state.update(format=99, something_new=1))
    before = saved.read_bytes()
    code = cli.main(["train", "ae", "--out", str(saved.parent), "--resume", "--epochs", "3", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "checkpoint format 99; this version reads up to" in err[0]
    assert saved.read_bytes() == before


@pytest.mark.parametrize("change, match", [
    (lambda s: s.update(surprise=1), rf"entries that checkpoint format {FORMAT} does not have: surprise"),
    (lambda s: s.update(format=2), "entries that checkpoint format 2 does not have: data"),
    (lambda s: s.update(format="3"), r"its format is '3'"),
    (lambda s: s.update(format=0), r"its format is 0"),
    (lambda s: s.update(data={"train": "many"}), "record of the training data is malformed"),
])
def test_entries_a_format_does_not_have_are_damage(change, match, saved):
    rewrite(saved, change)
    with pytest.raises(DamagedCheckpoint, match=match) as caught:
        read_checkpoint(saved)
    assert "train the model again" in str(caught.value)


def test_formats_1_and_2_still_load(tmp_path, trained, tiny_mnist):
    state = trained.state_dict()
    torch.save({**state, "format": 2}, tmp_path / CHECKPOINT_NAME)
    assert load_checkpoint(tmp_path, data=tiny_mnist).history == trained.history
    torch.save(state, tmp_path / CHECKPOINT_NAME)
    assert load_checkpoint(tmp_path, data=tiny_mnist).history == trained.history


def test_the_trainers_state_is_what_checkpoints_know(trained):
    """A key the Trainer adds to its state must be added to STATE_KEYS (and FORMAT bumped): read_state refuses keys
    a format does not have, and trainer_state passes only STATE_KEYS back to the Trainer."""
    assert set(trained.state_dict()) == set(checkpoints.STATE_KEYS)
    assert max(checkpoints.EXTRA_KEYS) == FORMAT


def test_a_checkpoint_records_its_data(saved, tiny_mnist):
    state = torch.load(saved, weights_only=True)
    assert state["format"] == FORMAT == 3
    assert state["data"] == {"train": 600, "validation": 200, "test": 200,
                             "digest": checkpoints.data_fingerprint(tiny_mnist)["digest"]}


# -- 7. train_or_load ----------------------------------------------------------------------------------------------
def tiny(**options):
    return dict(model="ae", epochs=1, hidden=(32, 32), batch_size=100, precision="fp32", device="cpu", **options)


def other_mnist(data: MNIST, **changes) -> MNIST:
    fields = dict(train_images=data.train_images, train_labels=data.train_labels, val_images=data.val_images,
                  val_labels=data.val_labels, test_images=data.test_images, test_labels=data.test_labels,
                  device=data.device)
    return MNIST(**{**fields, **changes})


def test_the_fingerprint_is_cheap_and_sees_other_data(tiny_mnist):
    fingerprint = checkpoints.data_fingerprint
    same_again = other_mnist(tiny_mnist, train_images=tiny_mnist.train_images.clone())
    assert fingerprint(same_again) == fingerprint(tiny_mnist)
    images = tiny_mnist.train_images.clone()
    images[0, 300] = 1 - images[0, 300]
    for changed in (other_mnist(tiny_mnist, train_labels=tiny_mnist.train_labels.roll(1)),
                    other_mnist(tiny_mnist, train_images=images),
                    other_mnist(tiny_mnist, test_images=tiny_mnist.test_images.flip(0))):
        assert fingerprint(changed) != fingerprint(tiny_mnist)


@pytest.mark.parametrize("how, said", [
    ("fewer images", "was trained on other data (600/200/200 train/validation/test images, now 500/200/200)"),
    ("other labels", "was trained on other data (as many images, 600/200/200, but other images or labels)"),
    ("no record", "does not record the data it was trained on (saved by an earlier saae_lib)"),
])
def test_train_or_load_retrains_a_run_of_other_data(how, said, capsys, isolated, tiny_mnist):
    name = f"data_{how.replace(' ', '_')}"
    train_or_load(name, data=tiny_mnist, progress=False, **tiny())
    path = isolated.runs / name / CHECKPOINT_NAME
    data = tiny_mnist
    if how == "fewer images":
        data = other_mnist(tiny_mnist, train_images=tiny_mnist.train_images[:500],
                           train_labels=tiny_mnist.train_labels[:500])
    elif how == "other labels":
        data = other_mnist(tiny_mnist, train_labels=tiny_mnist.train_labels.roll(7))
    else:
        rewrite(path, lambda state: (state.pop("data"), state.update(format=2)))
    capsys.readouterr()
    again = train_or_load(name, data=data, progress=False, **tiny())
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == f"{checkpoints.shown(path)} {said}: training {name!r} again"
    assert lines[1].startswith(f"trained {name!r}")
    assert torch.load(path, weights_only=True)["data"] == checkpoints.data_fingerprint(data)
    assert again.data.train_labels.equal(data.train_labels)
    capsys.readouterr()
    train_or_load(name, data=data, progress=False, **tiny())  # now it is the same run
    assert capsys.readouterr().out.startswith(f"loaded {name!r}")


def test_train_or_load_does_not_replace_a_newer_format(isolated, tiny_mnist):
    train_or_load("newer", data=tiny_mnist, progress=False, **tiny())
    path = isolated.runs / "newer" / CHECKPOINT_NAME
    rewrite(path, lambda state: state.update(format=99))
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match="newer saae_lib"):
        train_or_load("newer", data=tiny_mnist, progress=False, **tiny())
    assert path.read_bytes() == before


def test_train_or_load_retrains_a_damaged_run_saying_why(capsys, isolated, tiny_mnist):
    train_or_load("damaged", data=tiny_mnist, progress=False, **tiny())
    path = isolated.runs / "damaged" / CHECKPOINT_NAME
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        record = next(r for r in archive.infolist() if r.filename.endswith("/data/0"))
    path.write_bytes(flipped(raw, data_offset(raw, record) + 10))
    capsys.readouterr()
    train_or_load("damaged", data=tiny_mnist, progress=False, **tiny())
    first = capsys.readouterr().out.splitlines()[0]
    assert first == (f"{checkpoints.shown(path)} is damaged (record {record.filename} fails its CRC-32 check: bytes "
                     "changed on disk or on the way): training 'damaged' again")


@pytest.mark.parametrize("name", ["../escape", "/tmp/absolute", "a/b", "", ".", "..", ".hidden", "a\\b", "run\n",
                                  "x" * 201, None])
def test_train_or_load_refuses_names_that_are_not_one_folder(name, isolated, tmp_path, tiny_mnist):
    before = sorted(os.listdir(isolated.runs.parent)), sorted(os.listdir(isolated.runs))
    with pytest.raises(ValueError) as caught:
        train_or_load(name, data=tiny_mnist, progress=False, **tiny())
    message = str(caught.value)
    assert "\n" not in message and "is not a plain folder name" in message and "letters, digits" in message
    assert (sorted(os.listdir(isolated.runs.parent)), sorted(os.listdir(isolated.runs))) == before


@pytest.mark.parametrize("name", ["aae_gaussian_std5", "semi-100", "v1.2", "ae"])
def test_plain_names_are_fine(name):
    checkpoints.check_run_name(name)


# -- 8. the judge's cache ------------------------------------------------------------------------------------------
@pytest.fixture
def judge_cache(monkeypatch, tmp_path):
    """An empty cache folder; training the judge replaced by a quick stand-in that counts its calls."""
    monkeypatch.setenv("SAAE_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def quick(**kwargs):
        calls.append(kwargs)
        torch.manual_seed(0)
        return digit_classifier.DigitClassifier(), 0.75

    monkeypatch.setattr(digit_classifier, "train_digit_classifier", quick)
    return calls


@pytest.mark.parametrize("damage", ["random bytes", "flipped byte", "other weights", "no accuracy"])
def test_a_damaged_judge_cache_is_retrained_saying_so(damage, judge_cache, capsys):
    digit_classifier.load_judge(device="cpu")  # caches the stand-in
    path = digit_classifier.judge_path()
    assert path.is_file() and len(judge_cache) == 1
    raw = path.read_bytes()
    if damage == "random bytes":
        path.write_bytes(os.urandom(3000))
    elif damage == "flipped byte":
        with zipfile.ZipFile(path) as archive:
            record = max(archive.infolist(), key=lambda r: r.file_size)
        path.write_bytes(flipped(raw, data_offset(raw, record) + 100))
    elif damage == "other weights":
        torch.save({"model": {"w": torch.zeros(3)}, "test_accuracy": 0.9}, path)
    else:
        torch.save({"model": digit_classifier.DigitClassifier().state_dict(), "test_accuracy": "high"}, path)
    capsys.readouterr()
    model, accuracy = digit_classifier.load_judge(device="cpu")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(judge_cache) == 2 and accuracy == 0.75  # trained again
    assert len(err) == 1 and err[0].startswith(f"the judge classifier's cache {path} is damaged (")
    assert err[0].endswith("): training the judge again, which replaces it (one to four minutes on a CPU)")
    assert "train the model" not in err[0]
    assert digit_classifier.read_judge(path)[1] == 0.75  # the cache is whole again
    capsys.readouterr()
    digit_classifier.load_judge(device="cpu")
    assert len(judge_cache) == 2 and capsys.readouterr().err == ""


def test_a_judge_cache_that_cannot_be_read_is_not_replaced(monkeypatch, judge_cache):
    digit_classifier.load_judge(device="cpu")
    path = digit_classifier.judge_path()

    def unreadable(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(checkpoints, "check_archive", unreadable)
    with pytest.raises(CheckpointError, match=r"cannot read .*: Permission denied; check the path and its permissions"):
        digit_classifier.load_judge(device="cpu")
    assert len(judge_cache) == 1

