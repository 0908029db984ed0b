"""Atomic file writes: a reader (or a resumed run) never sees a half-written file."""

from __future__ import annotations

import errno
import glob
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; it replaces ``path`` when the block
    succeeds and is removed when it fails. The suffix is kept (numpy and matplotlib read it)."""
    path = Path(path)
    if path.is_dir():  # (else os.replace fails naming the temporary file)
        raise IsADirectoryError(errno.EISDIR, "a folder is where the file goes", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_writers_temporaries(path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _remove_dead_writers_temporaries(path: Path) -> None:
    """Delete this file's temporaries that a killed writer left (``.STEM.tmpPID.SUFFIX``, PID no longer
    running): commands that write one file, not a locked folder, would otherwise leave them for good."""
    from ._lock import _alive

    name = re.compile(rf"\.{re.escape(path.stem)}\.tmp(\d+){re.escape(path.suffix)}")
    for old in path.parent.glob(f".{glob.escape(path.stem)}.tmp*"):
        found = name.fullmatch(old.name)
        if found and int(found.group(1)) != os.getpid() and not _alive(int(found.group(1))):
            old.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
