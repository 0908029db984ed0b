"""One writer per output folder: a lock file holding the writer's pid (a stale one is taken over),
the temporary files of killed writers removed, and ``--fresh``'s backup of what a folder held."""

from __future__ import annotations

import glob
import os
import re
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

LOCK = ".igdefense.lock"
_TMP = re.compile(r"^\..+\.tmp(\d+)(\.[^.]*)?$")  # atomic.atomic_path's temporary names
_held: dict[Path, int] = {}  # folders this process holds, with how many nested holds
_claimed: dict[Path, str] = {}  # the kind of run this process writes into each folder it holds
KIND = ".igdefense-kind"  # what kind of run a folder holds (an evaluation, a sweep, ...)


class FolderBusy(RuntimeError):
    """Another live process is writing to the folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _secondary_process() -> bool:
    """True on torchrun's processes other than rank 0: rank 0 holds the folder for the whole group."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_rank() > 0


@contextmanager
def folder_lock(folder: str | os.PathLike, kind: str | None = None) -> Iterator[Path]:
    """Hold ``folder`` (created) for this process while the block runs. A lock of a live process on this
    host raises :class:`FolderBusy`; one of a dead process is taken over. Re-entrant. On taking a
    folder, the temporary files that dead writers left behind (``.NAME.tmpPID.ext``) are removed.
    ``kind``: the kind of run written there ("evaluation", "sweep", ...); a folder holding another
    kind is refused (:class:`FolderOfAnotherRun`), so that no run overwrites another's outputs. A hold
    inside one that claimed the folder (an evaluation inside a sweep) writes into the outer kind."""
    folder = Path(folder)
    if _secondary_process():
        yield folder
        return
    folder.mkdir(parents=True, exist_ok=True)
    key = folder.resolve()
    if key in _held:
        _held[key] += 1
        try:
            if kind and key not in _claimed:
                _claimed[key] = _claim(folder, kind)
            yield folder
        finally:
            _held[key] -= 1
        return
    _acquire(folder / LOCK)
    _held[key] = 1
    try:
        remove_leftovers(folder)
        if kind:
            _claimed[key] = _claim(folder, kind)
        yield folder
    finally:
        del _held[key]
        _claimed.pop(key, None)
        (folder / LOCK).unlink(missing_ok=True)


class FolderOfAnotherRun(ValueError):
    """A folder holds another kind of run than the one about to write there."""


def _claim(folder: Path, kind: str) -> str:
    theirs = _kind_of(folder)
    if theirs not in (None, kind):
        raise FolderOfAnotherRun(f"{folder} holds another run's results ({theirs}), and this {kind} would write over "
                                 "them: use another output folder (--out), or start over with --fresh (it keeps them "
                                 "in a backup folder)")
    if theirs is None:
        (folder / KIND).write_text(kind + "\n")
    return kind


def _kind_of(folder: Path) -> str | None:
    """The kind of run ``folder`` holds: its mark, else (folders written before runs marked theirs) what its
    files tell; None for a folder holding none."""
    mark = folder / KIND
    if mark.is_file():
        return mark.read_text().strip() or None
    files = {p.name for p in folder.iterdir()}
    if "sweep.json" in files:
        return "sweep"
    if {"checkpoint.safetensors", "log.jsonl"} & files:
        return "refinement"
    if "labels.npy" in files:
        return "corruptions dataset"
    if any(name.endswith(".jsonl") for name in files):
        return "evaluation"
    return None


def _acquire(lock: Path) -> None:
    me = f"{os.getpid()} {socket.gethostname()}"
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid, host = lock.read_text().split()
                pid = int(pid)
            except (OSError, ValueError):  # unreadable or torn: a writer died while creating it
                lock.unlink(missing_ok=True)
                continue
            if host == socket.gethostname() and (pid == os.getpid() or not _alive(pid)):
                lock.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise FolderBusy(f"{lock.parent} is being written by another igdefense run (pid {pid} on {host}); "
                             f"wait for it to finish, or use another output folder (if that process is gone, "
                             f"delete {lock})")
        with os.fdopen(fd, "w") as f:
            f.write(me)
        return
    raise FolderBusy(f"could not take the lock {lock}; delete it if no igdefense run is writing there")


def remove_leftovers(folder: Path, of: Path | None = None) -> list[Path]:
    """Delete the temporary files of writers that are no longer running (a kill leaves them); ``of``:
    only those of that one file (``.STEM.tmpPID.SUFFIX``)."""
    removed = []
    for f in folder.glob(f".{glob.escape(of.stem)}.tmp*") if of else folder.iterdir():
        m = _TMP.match(f.name)
        if of and m and f.name != f".{of.stem}.tmp{m.group(1)}{of.suffix}":
            continue  # (another file whose name starts like this one's)
        if m and f.is_file() and int(m.group(1)) != os.getpid() and not _alive(int(m.group(1))):
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def start_fresh(folder: str | os.PathLike) -> Path | None:
    """Move everything ``folder`` holds into ``folder/backup-<time>/`` (earlier backups stay where
    they are): a run that starts over loses nothing. Returns the backup folder, None if nothing was there."""
    folder = Path(folder)
    items = [p for p in folder.iterdir() if not p.name.startswith("backup-") and p.name != LOCK] \
        if folder.is_dir() else []
    if not items:
        return None
    stamp = time.strftime("backup-%Y%m%d-%H%M%S")
    backup, n = folder / stamp, 1
    while backup.exists():  # (two starts within a second)
        backup, n = folder / f"{stamp}-{n}", n + 1
    backup.mkdir()
    for p in items:
        shutil.move(str(p), str(backup / p.name))
    return backup
