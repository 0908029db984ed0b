"""CIFAR-10-C-layout datasets: write one from clean images, read one (ours or the real CIFAR-10-C).

The layout is CIFAR-10-C's: ``<name>.npy`` holds uint8 (5 N, 32, 32, 3), severities 1..5 one after
the other, and ``labels.npy`` the N labels repeated 5 times. ``meta.json`` (ours only) records the
seed and the source, for the "CIFAR-10-C-style, CIFAR parameters, seed S" line every report needs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..atomic import atomic_path, atomic_write
from .._identity import FIX, RESULTS_VERSION, check_same
from .._lock import folder_lock
from .registry import NAMES, SEVERITIES, check_name, check_severity, corrupt
from .blur import to_8bit
from .._validation import json_loads
from ..images import items

CHUNK = 1000  # images corrupted together; seeds are per chunk, so the output does not depend on memory


def chunk_seed(seed: int, name: str, severity: int, chunk: int) -> int:
    """The seed of one chunk: independent streams per (seed, corruption, severity, chunk)."""
    return int(np.random.SeedSequence([seed, NAMES.index(name), severity, chunk]).generate_state(1)[0])


def write_dataset(out_dir: str | os.PathLike, images: Dataset, *, names: Sequence[str] = NAMES,
                  seed: int = 0, source: str = "", progress: bool = True) -> Path:
    """Corrupt every image of ``images`` (a dataset of (3, H, W) float images and labels, e.g.
    ``igdefense.data.CIFAR10("test")``) with each corruption at severities 1..5.

    Each ``<name>.npy`` is written atomically: a run that is stopped resumes at the first corruption
    without a file (the temporary file a kill leaves is removed by the next run). Images are read and
    corrupted ``CHUNK`` at a time (peak memory ~ a few chunks), and quantised as the script's uint8
    cast does (truncation). ``meta.json`` binds the folder to its images (an igdefense dataset's
    files and indices), seed and version: a run with other ones is refused.
    """
    out = Path(out_dir)
    for name in names:
        check_name(name)
    n = len(images)
    if n == 0:
        raise ValueError("no images to corrupt: the dataset is empty")
    data = images.identity() if callable(getattr(images, "identity", None)) else {"type": type(images).__qualname__}
    meta = {"kind": "CIFAR-10-C-style, CIFAR parameters", "seed": seed, "source": source, "images": n,
            "chunk": CHUNK, "data": data, "results_version": RESULTS_VERSION}
    with folder_lock(out, "corruptions dataset"):
        meta_path = out / "meta.json"
        if meta_path.exists():
            try:
                old = json_loads(meta_path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{meta_path} is not JSON ({e}); use another folder, or --fresh") from e
            theirs = {k: old.get(k) for k in meta} if isinstance(old, dict) else old
            check_same("a corruptions dataset", out, theirs, meta, FIX)
        atomic_write(meta_path, json.dumps(meta, indent=1))
        _write(out, images, names, n, seed, progress)
    return out


def _write(out: Path, images: Dataset, names: Sequence[str], n: int, seed: int, progress: bool) -> None:
    labels = np.tile(_labels(images, n).astype(np.uint8), len(SEVERITIES))
    try:
        written = np.load(out / "labels.npy")
    except (OSError, ValueError):
        written = None
    if written is None or written.dtype != labels.dtype or not np.array_equal(written, labels):  # (short, other)
        with atomic_path(out / "labels.npy") as tmp:
            np.save(tmp, labels)
    shape = (len(SEVERITIES) * n, *chunk(images, 0)[0].shape[2:], 3)  # (images, H, W, channels), uint8
    todo = [name for name in names if name not in _done(out, shape)]
    bar = tqdm(total=len(todo) * len(SEVERITIES) * n, desc="corrupting", unit="img", disable=not progress)
    for name in todo:
        bar.set_postfix_str(name)
        with atomic_path(out / f"{name}.npy") as tmp:
            array = None
            for start in range(0, n, CHUNK):
                x, _ = chunk(images, start)  # read once, corrupted at every severity
                for s, severity in enumerate(SEVERITIES):
                    y = corrupt(x, name, severity, seed=chunk_seed(seed, name, severity, start // CHUNK))
                    y = (to_8bit(y) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
                    if array is None:
                        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                                          shape=(len(SEVERITIES) * n, *y.shape[1:]))
                    array[s * n + start:s * n + start + len(y)] = y
                    bar.update(len(y))
            array.flush()
            del array
    bar.close()


def chunk(images: Dataset, start: int) -> tuple[torch.Tensor, np.ndarray]:
    """The ``CHUNK`` images from ``start`` (the writer corrupts one chunk at a time, with its seeds)."""
    x, y = items(images, range(start, min(start + CHUNK, len(images))))
    return x, np.asarray(y)


def _labels(images: Dataset, n: int) -> np.ndarray:
    if isinstance(getattr(images, "labels", None), np.ndarray) and hasattr(images, "indices"):  # (no decoding)
        return np.asarray(images.labels)[np.asarray(images.indices)]
    return np.concatenate([chunk(images, i)[1] for i in range(0, n, CHUNK)])


def _done(root: Path, shape: tuple[int, ...]) -> list[str]:
    """Corruptions whose file is complete in ``root``: uint8 of the whole ``shape`` (a file of another
    dtype or shape is written again)."""
    done = []
    for name in NAMES:
        try:
            array = np.load(root / f"{name}.npy", mmap_mode="r")
        except (OSError, ValueError):
            continue
        if array.dtype == np.uint8 and array.shape == shape:
            done.append(name)
    return done


class CorruptedCIFAR10(Dataset):
    """One corruption at one severity of a CIFAR-10-C-layout folder (ours or the real CIFAR-10-C),
    read lazily from the memory-mapped uint8 file: items are ((3, 32, 32) float in [0, 1], label)."""

    def __init__(self, root: str | os.PathLike, name: str, severity: int):
        self.root = Path(root)
        self.name, self.severity = check_name(name), check_severity(severity)
        path = self.root / f"{name}.npy"
        if not path.exists():
            have = sorted(p.stem for p in self.root.glob("*.npy") if p.stem != "labels") if self.root.is_dir() else []
            raise FileNotFoundError(f"{path} not found (the folder has: {', '.join(have) or 'nothing'}); write it "
                                    f"with `igdefense corruptions --out {self.root}`")
        try:
            data = np.load(path, mmap_mode="r")
            labels = np.load(self.root / "labels.npy")
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} or labels.npy is truncated or not a .npy array ({e}); delete it and write "
                             "it again") from e
        if data.dtype != np.uint8 or data.ndim != 4 or data.shape[3] != 3 or data.shape[0] % len(SEVERITIES):
            raise ValueError(f"{path} holds {data.dtype} {data.shape}, not uint8 (5 N, H, W, 3) as CIFAR-10-C")
        n = data.shape[0] // len(SEVERITIES)
        if labels.shape != (len(SEVERITIES) * n,):
            raise ValueError(f"labels.npy has shape {labels.shape}, {path.name} needs ({len(SEVERITIES) * n},)")
        rows = slice((severity - 1) * n, severity * n)
        self.data, self.labels = data[rows], torch.from_numpy(labels[rows].astype(np.int64))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(np.array(self.data[i])).permute(2, 0, 1).float() / 255, int(self.labels[i])

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.array(self.data[list(indices)])).permute(0, 3, 1, 2).float() / 255
        return x, self.labels[list(indices)]


def corrupted_loaders(root: str | os.PathLike, names: Iterable[str] = NAMES,
                      severities: Iterable[int] = SEVERITIES, batch_size: int = 500):
    """{(name, severity): DataLoader} over a CIFAR-10-C-layout folder (batches in file order)."""
    from torch.utils.data import DataLoader

    from ..images import collate

    return {(name, s): DataLoader(CorruptedCIFAR10(root, name, s), batch_size=batch_size, collate_fn=collate)
            for name in names for s in severities}
