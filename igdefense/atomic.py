"""Atomic file writes: a reader (or a resumed run) never sees a half-written file."""

from __future__ import annotations

import errno
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ._lock import remove_leftovers


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; it replaces ``path`` when the block
    succeeds and is removed when it fails. The suffix is kept (numpy and matplotlib read it)."""
    path = Path(path)
    if path.is_dir():  # (else os.replace fails naming the temporary file)
        raise IsADirectoryError(errno.EISDIR, "a folder is where the file goes", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    # (commands that write one file hold no folder whose lock would clean what a killed writer of it left)
    remove_leftovers(path.parent, of=path)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as e:
        if e.filename is None:  # (a full disk's error names no file: say which one was being written)
            raise OSError(e.errno, f"{e.strerror or e} while writing {path}", str(path)) from e
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
