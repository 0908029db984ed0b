"""Seals for igdefense's caches: a keyed digest (HMAC-SHA256) of what a cached file holds and of the
key its reader derives from the file's inputs, under a secret made once per cache folder.

A digest written beside a file catches a file damaged or replaced by mistake, but anyone who plants
a file can recompute a plain digest too. The seal needs the folder's secret (``.seal-key``, readable
by its owner only), so a file copied in from elsewhere, or edited and re-digested, does not pass: its
reader recomputes it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

_SECRET = ".seal-key"


def _secret(folder: Path) -> bytes:
    path = folder / _SECRET
    try:
        return path.read_bytes()
    except FileNotFoundError:
        pass
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f"{_SECRET}.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(os.urandom(32))
    try:  # linked whole, never seen half written; a process that loses the race reads the winner's
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_bytes()


def seal(folder: str | os.PathLike, key: str, content_digest: str) -> str:
    """The seal of content ``content_digest`` stored under ``key`` in cache ``folder``."""
    return hmac.new(_secret(Path(folder)), f"{key}\n{content_digest}".encode(), hashlib.sha256).hexdigest()


def sealed(folder: str | os.PathLike, key: str, content_digest: str, seal_found: object) -> bool:
    """Whether ``seal_found`` (read from the file, or beside it) is this content's seal under ``key``."""
    return isinstance(seal_found, str) and hmac.compare_digest(seal(folder, key, content_digest), seal_found)
