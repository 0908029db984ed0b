"""What a stored result belongs to: digests of weights, tensors and files, and the one-line refusal
when a file on disk was made by something else.

Every log, cache and checkpoint igdefense writes records the identity of what produced it (see
README, "What is checked"); a rerun compares it with its own and refuses on any difference.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Iterable

import torch
from torch import nn

# Bumped when a change makes stored per-image results differ (an attack's or the defense's numbers):
# logs and caches of another value are refused instead of being mixed with new results.
RESULTS_VERSION = 3  # 3: APGD attacks every image of a randomized defense


# The two ways out of a refusal, the same everywhere.
FIX = "use another output folder (--out), or start over with --fresh (the old files are kept in a backup folder)"


class StateMismatch(ValueError):
    """A file on disk belongs to another run (model, defense, data or settings differ)."""


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha256 of the tensors' dtypes, shapes and bytes (any device)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        t = t.cpu().contiguous()
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def model_digest(model: nn.Module) -> str:
    """sha256 of a model's class and its whole state dict (parameters and buffers, by name)."""
    h = hashlib.sha256(type(model).__qualname__.encode())
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor_digest(t).encode())
    return h.hexdigest()


def model_identity(model: nn.Module) -> dict:
    """What a model's results depend on: ``model.identity()`` where it has one (IGDefense: the base
    model's weights, the rankings' digest and every setting), else its class and weights, plus its
    plain settings (numbers, strings) for third-party models whose behaviour they change."""
    if callable(getattr(model, "identity", None)):
        return model.identity()
    return {"class": type(model).__qualname__, "weights": model_digest(model)[:32], **plain_settings(model)}


def plain_settings(module: nn.Module) -> dict:
    """A module's public attributes that are numbers, strings or None, but its train/eval flag."""
    return {k: v for k, v in sorted(vars(module).items())
            if not k.startswith("_") and k != "training" and isinstance(v, (bool, int, float, str, type(None)))}


def file_identity(path: str | os.PathLike) -> dict:
    """A file or folder as a source, by content: a file's size and sha256; for a folder, a digest of
    every file's relative path, size and sha256 under it.

    Not by path or modification time: the same bytes copied, moved or laid anew (a shared data
    folder, another node of a torchrun job) are the same data, so logs and checkpoints made from them
    resume; one changed byte is other data. Digests are kept for the process's life, keyed by the
    file's stat, so a source is read once per run (about 1 s per GB).
    """
    path = Path(path).resolve()
    if path.is_file():
        return {"size": path.stat().st_size, "sha256": _content_digest(path)[:32]}
    h = hashlib.sha256()
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            f = Path(root) / name
            h.update(f"{f.relative_to(path).as_posix()}\0{f.stat().st_size}\0{_content_digest(f)}\n".encode())
    return {"listing": h.hexdigest()[:32]}


_DIGESTS: dict[tuple, str] = {}


def _content_digest(path: Path) -> str:
    st = path.stat()
    key = (str(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)
    return _DIGESTS[key]


def file_digest(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in chunks (a decoded training split is 150 MB)."""
    h = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def short_digest(value: Any) -> str:
    """16 hex digits of sha256 over the JSON of ``value`` (for file names of caches)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def differences(theirs: Any, ours: Any, prefix: str = "") -> list[str]:
    """The keys (dotted) at which two JSON-like values differ, e.g. ["model.sigma", "data"]."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        out = []
        for k in sorted(set(theirs) | set(ours), key=str):
            out += differences(theirs.get(k), ours.get(k), f"{prefix}{k}.")
        return out
    return [] if theirs == ours else [prefix.rstrip(".") or "everything"]


def describe_differences(theirs: Any, ours: Any, limit: int = 4) -> str:
    """'model.sigma (0.0157 there, 0.0314 here); data' for a refusal's one line."""
    parts = []
    keys = differences(theirs, ours)
    for key in keys[:limit]:
        a, b = _at(theirs, key), _at(ours, key)
        short = lambda v: v if isinstance(v, (int, float, bool)) or v is None else _clip(v)  # noqa: E731
        parts.append(f"{key} ({short(a)} there, {short(b)} here)")
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts)


def _at(value: Any, key: str) -> Any:
    if key == "everything":
        return value
    for part in key.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _clip(value: Any, width: int = 40) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[:width - 3] + "..."


def check_same(what: str, path: str | os.PathLike, theirs: Any, ours: Any, fix: str) -> None:
    """Raise :class:`StateMismatch` (one line: the file, what differs, ``fix``) unless equal."""
    if theirs != ours:
        raise StateMismatch(f"{path} holds {what} made by another run: {describe_differences(theirs, ours)}; {fix}")


def digest_indices(indices: Iterable[int]) -> str:
    return hashlib.sha256(json.dumps([int(i) for i in indices]).encode()).hexdigest()[:32]
