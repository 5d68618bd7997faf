"""A run folder on disk (what `train --out DIR` writes): one writer at a time, the partial folder a `--force` run
trains in, and the replacement of the old run by the new one, so that nothing trained is lost or mismatched.

- One writer per folder: `run_lock` holds an flock on DIR/.saae.lock (with the writer's pid) from before anything is
  deleted or trained until the command ends; the kernel drops it if the process dies.
- `--force` trains in a partial folder marked as saae_lib's (DIR.partial beside DIR, or inside DIR where DIR is a mount
  point); saae_lib removes only the files it wrote there, and an interrupted one is continued by --resume or set aside.
- `replace_run` brings the new checkpoint and metrics into DIR under temporary names first (a rename, or a copy
  flushed to disk across filesystems), and only then replaces the old files: old metrics never sit beside the new
  model, and are never gone before the new ones are there.
"""

import contextlib
import errno
import json
import os
import shlex
import shutil
from pathlib import Path

from .checkpoints import CHECKPOINT_NAME, CheckpointError, read_checkpoint, sync_folder, temporary_pid

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; runs are not locked there
    fcntl = None

METRICS_NAME = "metrics.json"


class RunFolderError(Exception):
    """A run folder the command must not touch (another writer, someone else's files): what to do, in one line."""


def command_line(*words) -> str:
    """A command for the user to copy, each word quoted for the shell where it needs it (a path with a space)."""
    return " ".join(["python -m saae_lib", *(shlex.quote(str(word)) for word in words)])


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


# -- one writer per --out: a lock held from before anything is deleted or trained until the command ends --------------
LOCK_NAME = ".saae.lock"  # in --out while `train` writes there: its pid; removed at the end (flock: gone if it died)


@contextlib.contextmanager
def run_lock(out: Path):
    """Hold the lock of the run folder `out`; a second writer is refused (RunFolderError) with the first one's pid."""
    handle = take_lock(out)
    try:
        yield
    finally:
        if handle is not None:
            with contextlib.suppress(OSError):
                (out / LOCK_NAME).unlink()  # while still locked: a writer waiting on it then takes a new file
            os.close(handle)


def take_lock(out: Path) -> int | None:
    """The locked file descriptor of OUT/.saae.lock (None where files cannot be locked: Windows, some mounts)."""
    if fcntl is None:
        return None
    path = out / LOCK_NAME
    while True:
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise RunFolderError(f"--out {out} cannot be written ({error.strerror or error}): choose another folder "
                                 "or fix its permissions") from None
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                pid = os.pread(handle, 32, 0).decode(errors="replace").strip()
            except OSError:
                pid = ""
            os.close(handle)
            holder = f" (pid {pid})" if pid.isdigit() else ""
            raise RunFolderError(f"--out {out} is being written by another saae_lib process{holder}: wait for it to "
                                 "end or choose another --out") from None
        except OSError:  # this filesystem has no locks
            os.close(handle)
            return None
        try:
            if os.path.samestat(os.fstat(handle), os.stat(path)):
                break
        except OSError:
            pass
        os.close(handle)  # the writer before us removed this file as we opened it: lock the one there now
    with contextlib.suppress(OSError):
        os.ftruncate(handle, 0)
        os.pwrite(handle, f"{os.getpid()}\n".encode(), 0)
    return handle


# -- --force: the new run trains in a partial folder that belongs to it, and replaces the old one at the end ----------
PARTIAL_MARKER = ".saae-partial"  # in a partial folder: saae_lib made it, for the --force run of the folder it names
INNER_PARTIAL = ".saae-partial-run"  # the partial folder inside --out, where --out is a mount point


def sibling_partial(out: Path) -> Path:
    named = out if out.name not in ("", ".", "..") else Path(os.path.abspath(out))
    return named.parent / f"{named.name}.partial"


def partial_place(out: Path) -> Path:
    """Where a new --force run of `out` trains: the sibling OUT.partial, or inside `out` where that is another
    filesystem (`out` a mount point: a rename from there would fail) or cannot be written."""
    sibling = sibling_partial(out)
    try:
        if os.stat(out).st_dev == os.stat(sibling.parent).st_dev and os.access(sibling.parent, os.W_OK | os.X_OK):
            return sibling
    except OSError:
        pass
    return out / INNER_PARTIAL


def find_partial(out: Path) -> Path | None:
    """The partial folder saae_lib made for a --force run of `out` that is still there, if any."""
    for folder in (sibling_partial(out), out / INNER_PARTIAL):
        if (folder / PARTIAL_MARKER).is_file() and not folder.is_symlink():
            return folder
    return None


def partial_owner(folder: Path) -> str | None:
    """The --out whose --force run trains in `folder`, if `folder` is such a partial folder."""
    if not (folder / PARTIAL_MARKER).is_file():
        return None
    try:
        return str(json.loads((folder / PARTIAL_MARKER).read_text())["out"])
    except (OSError, ValueError, TypeError, KeyError):
        return str(folder.parent if folder.name == INNER_PARTIAL else folder.with_name(
            folder.name.removesuffix(".partial")))


def ours(name: str) -> bool:
    """A file saae_lib writes in a partial folder (or the temporary file of one)."""
    return name in (PARTIAL_MARKER, CHECKPOINT_NAME, METRICS_NAME) or any(
        temporary_pid(name, written) is not False for written in (CHECKPOINT_NAME, METRICS_NAME))


def check_partial(folder: Path, out: Path) -> None:
    """Refuse (Usage) to touch a partial folder of `out` that saae_lib did not make, or that holds anything else."""
    if not folder.exists() and not folder.is_symlink():
        return
    if folder.is_symlink() or not folder.is_dir() or not (folder / PARTIAL_MARKER).is_file():
        raise RunFolderError(f"{folder} is in the way: saae_lib trains the --force run of {out} there, and did not "
                             "make this one; move it away (or delete it yourself), then run again")
    foreign = sorted(name for name in os.listdir(folder) if not ours(name))
    if foreign:
        raise RunFolderError(f"{folder} holds files saae_lib did not write there ({', '.join(foreign[:3])}"
                             f"{', ...' if len(foreign) > 3 else ''}): move them out of it, then run again")


def make_partial(folder: Path, out: Path) -> None:
    try:
        folder.mkdir()
    except (PermissionError, FileExistsError) as error:  # (anything else, a full disk: main's one line)
        raise RunFolderError(f"{folder} cannot be written ({error.strerror or error}): --force trains the new run "
                             "there; fix its folder's permissions, or choose another --out") from None
    try:
        (folder / PARTIAL_MARKER).write_text(json.dumps({"out": os.path.abspath(out), "by": "saae_lib train --force"})
                                             + "\n")
    except BaseException:
        remove_partial(folder)  # no folder without its marker: it would look like someone else's
        raise


def remove_partial(folder: Path) -> None:
    """Remove a partial folder: only the files saae_lib wrote there, and the folder if that leaves it empty."""
    with contextlib.suppress(OSError):
        for name in os.listdir(folder):
            if ours(name):
                (folder / name).unlink(missing_ok=True)
        folder.rmdir()


def set_aside(folder: Path, out: Path) -> tuple[Path, str]:
    """Keep the interrupted --force run in `folder` as an ordinary run folder beside it (a new run takes its place);
    returns where it is now and a line that tells the user so."""
    base = folder.parent / ("interrupted-run" if folder.name == INNER_PARTIAL else
                            folder.name.removesuffix(".partial") + ".interrupted")
    kept, n = base, 1
    while kept.exists() or kept.is_symlink():
        n += 1
        kept = base.with_name(f"{base.name}-{n}")
    os.rename(folder, kept)
    (kept / PARTIAL_MARKER).unlink(missing_ok=True)
    try:
        state, saved = read_checkpoint(kept)
        what = f"{saved['model']} model, {len(state['history'])} of {saved['epochs']} epochs"
        again = command_line("train", saved["model"], "--out", kept, "--resume")
    except (CheckpointError, OSError, KeyError, TypeError):
        what, again = "an unfinished run", command_line("train", "MODEL", "--out", kept, "--resume")
    return kept, (f"note: {folder} held an interrupted --force run of {out} ({what}); it is kept as {kept}: continue "
                  f"it with: {again}, or delete it")


def move_into(source: Path, target: Path) -> bool:
    """Move the file `source` to `target`: a rename, or a copy flushed to disk where they are on two filesystems
    (EXDEV); True if it was renamed (`source` is gone), False if copied."""
    try:
        os.replace(source, target)
        return True
    except OSError as error:
        if error.errno != errno.EXDEV:
            raise
    try:
        with open(source, "rb") as file, open(target, "wb") as copy:
            shutil.copyfileobj(file, copy, 1 << 20)
            copy.flush()
            os.fsync(copy.fileno())
    except OSError as error:
        target.unlink(missing_ok=True)
        raise OSError(error.errno, error.strerror or str(error), str(error.filename or target)) from None
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return False


def incoming(out: Path, name: str) -> Path:
    return out / f".{name}.incoming"


def replace_run(partial: Path, out: Path) -> None:
    """Put the finished run in `partial` in place of the one in `out` (other files in `out` stay).

    The new checkpoint and metrics are first brought into `out` under temporary names (renamed, or copied where
    `partial` is on another filesystem): if that fails, `out` is as it was. Only then is the old metrics.json removed
    and the two renamed over the old files, so old metrics are never beside the new model, and never gone before the
    new ones are in `out`."""
    staged = []
    try:
        for name in (CHECKPOINT_NAME, METRICS_NAME):
            staged.append((name, move_into(partial / name, incoming(out, name))))
    except BaseException:
        for name, renamed in staged:  # undo: the partial folder keeps the whole new run
            with contextlib.suppress(OSError):
                if renamed:
                    os.replace(incoming(out, name), partial / name)
                else:
                    incoming(out, name).unlink()
        raise
    (out / METRICS_NAME).unlink(missing_ok=True)
    os.replace(incoming(out, CHECKPOINT_NAME), out / CHECKPOINT_NAME)
    os.replace(incoming(out, METRICS_NAME), out / METRICS_NAME)
    sync_folder(out)
    remove_partial(partial)


def metrics_describe(folder: Path, epochs: int) -> bool:
    """metrics.json in `folder` is strict JSON of a run of `epochs` epochs (what the checkpoint beside it holds)."""
    def refuse(constant):
        raise ValueError(constant)

    try:
        metrics = json.loads((folder / METRICS_NAME).read_text(), parse_constant=refuse)
    except (OSError, ValueError):
        return False
    return isinstance(metrics, dict) and metrics.get("epochs") == epochs
