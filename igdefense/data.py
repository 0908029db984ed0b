"""Datasets without downloads: CIFAR-10 found in the usual places, CIFAR-100 from a torchvision root,
any image folder (:mod:`igdefense.image_folder`); class-balanced subsets, streamed in batches.

    data = open_dataset("path/to/imagenet/val", "test", image_size=224)   # what --data takes
    loader = balanced_loader(data, n=500, batch_size=100)

Where CIFAR-10 is looked for, in order:
1. ``root`` passed by the caller, or the ``IGDEFENSE_DATA`` environment variable: a
   torchvision root (holding ``cifar-10-batches-py``), a JPEG tree (``train/<class>/*.jpg``,
   ``test/<class>/*.jpg``) or a ``.tar.gz`` of that tree;
2. torchvision's usual roots (``./data``, ``~/data``, ``~/.cache/torchvision``);
3. the JPEG copy ``shared/data/cifar10-jpeg.tar.gz`` beside the project checkout.

JPEG sources are decoded once into uint8 ``.npy`` files in the cache dir (``IGDEFENSE_CACHE``,
default ``~/.cache/igdefense``) and read back as memory maps, so nothing holds the dataset
in memory. The decoded files are keyed by the source (its path, size and modification time, or
for a folder every file's), so another copy of CIFAR-10 is decoded on its own.

No file is unpickled as such: torchvision checks CIFAR-10's files against their published
checksums before reading them, and CIFAR-100's pickles go through an unpickler that builds only
the arrays, lists, dicts and strings those files hold.
"""

from __future__ import annotations

import io
import json
import logging
import os
import pickle
import tarfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .atomic import atomic_path
from ._identity import file_digest, file_identity, short_digest
from ._lock import remove_leftovers
from ._seal import seal, sealed
from ._validation import json_loads
from .images import LabelledImages, collate

log = logging.getLogger(__name__)

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)

_PROJECT_ROOT = Path(__file__).resolve().parent.parent


class DataNotFoundError(FileNotFoundError):
    """CIFAR-10 could not be found in any known place."""


def cache_dir() -> Path:
    """The directory igdefense extracts data into (``IGDEFENSE_CACHE`` or ~/.cache/igdefense)."""
    path = Path(os.environ.get("IGDEFENSE_CACHE", Path.home() / ".cache" / "igdefense"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def search_paths(root: str | os.PathLike | None) -> list[Path]:
    if root is not None:
        return [Path(root).expanduser()]
    found = []
    if os.environ.get("IGDEFENSE_DATA"):  # named: it is the data, or nothing is (no quiet fallback to another copy)
        named = Path(os.environ["IGDEFENSE_DATA"]).expanduser()
        if not named.exists():
            raise DataNotFoundError(f"IGDEFENSE_DATA={named} does not exist: point it at CIFAR-10 (a .tar.gz, a "
                                    "torchvision root or a JPEG tree), or unset it to search the usual places")
        return [named]
    found += [Path("data"), Path.home() / "data", Path.home() / ".cache" / "torchvision"]
    for base in (Path.cwd(), _PROJECT_ROOT):
        found += [base / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz",
                  base / "shared" / "data" / "cifar10-jpeg.tar.gz"]
    return found


def _kind(path: Path) -> str | None:
    if (path / "cifar-10-batches-py").is_dir():
        return "torchvision"
    if path.is_dir() and (path / "test").is_dir() and (path / "train").is_dir():
        return "jpeg-dir"
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz", ".tar")):
        return "jpeg-tar"
    return None


def locate_cifar10(root: str | os.PathLike | None = None) -> tuple[str, Path]:
    """Return ``(kind, path)`` of the first CIFAR-10 source found; raise a helpful error if none."""
    tried = search_paths(root)
    for path in tried:
        kind = _kind(path)
        if kind:
            return kind, path.resolve()
    looked = "\n  ".join(str(p) for p in tried)
    raise DataNotFoundError(
        "CIFAR-10 not found. Looked in:\n  " + looked + "\n"
        "Point igdefense at it with IGDEFENSE_DATA=/path/to/cifar10-jpeg.tar.gz (or a torchvision "
        "root holding cifar-10-batches-py, or a directory with train/<class>/*.jpg), or pass --data."
    )


def _content_digest(images_file: Path, labels_file: Path) -> str:
    return f"{file_digest(images_file)},{file_digest(labels_file)}"


def _cached_arrays(images_file: Path, labels_file: Path, seal_file: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """The decoded split, if its files are there, hold what a decode writes and match the seal the
    decode wrote beside them (else None: decode again; a file changed since is said in one line)."""
    try:
        found = json_loads(seal_file.read_text())
        images, labels = np.load(images_file, mmap_mode="r"), np.load(labels_file)
        digest = _content_digest(images_file, labels_file)
    except (OSError, ValueError):
        return None
    if not sealed(cache_dir(), images_file.name, digest, found.get("seal") if isinstance(found, dict) else None):
        log.warning("the decoded CIFAR-10 in %s is not what this cache decoded (its seal differs): decoding again",
                    images_file.parent)
        return None
    fits = (images.dtype == np.uint8 and images.shape[1:] == (32, 32, 3) and labels.dtype == np.int64
            and labels.shape == (len(images),) and len(labels) and 0 <= labels.min() and labels.max() < 10)
    return (images, labels) if fits else None


def _decode_jpegs(kind: str, path: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode one split of the JPEG tree into the cache; returns memory-mapped (images, labels)."""
    out = cache_dir() / f"cifar10-jpeg-{split}-{short_digest(_jpeg_source(kind, path, split))}"
    images_file, labels_file = out.with_suffix(".images.npy"), out.with_suffix(".labels.npy")
    seal_file = out.with_suffix(".seal.json")
    cached = _cached_arrays(images_file, labels_file, seal_file)
    if cached is not None:
        return cached
    remove_leftovers(cache_dir())  # a killed decode's temporary file: 150 MB for the training split

    def members():
        # Yields (class name, file name, bytes) for the split, in any order.
        if kind == "jpeg-dir":
            for cls_dir in sorted((path / split).iterdir()):
                for f in cls_dir.glob("*.jpg"):
                    yield cls_dir.name, f.name, f.read_bytes()
        else:
            with tarfile.open(path) as tar:
                for m in tar:
                    parts = Path(m.name).parts
                    if m.isfile() and len(parts) >= 3 and parts[-3] == split and m.name.endswith(".jpg"):
                        yield parts[-2], parts[-1], tar.extractfile(m).read()

    try:
        items = list(members())
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:  # random bytes, a cut download
        raise ValueError(f"{path} is not a readable CIFAR-10 archive (truncated or not a .tar.gz?): "
                         f"{type(e).__name__}: {e}") from None
    unknown = sorted({c for c, _, _ in items} - set(CIFAR10_CLASSES))
    if unknown:
        raise ValueError(f"{path}: {split}/ holds class folders {unknown[:5]} that are not CIFAR-10's "
                         f"({', '.join(CIFAR10_CLASSES)})")
    items.sort(key=lambda t: (CIFAR10_CLASSES.index(t[0]), t[1]))
    if not items:
        raise DataNotFoundError(f"no {split}/<class>/*.jpg images inside {path}")
    labels = np.array([CIFAR10_CLASSES.index(c) for c, _, _ in items], dtype=np.int64)
    seal_file.unlink(missing_ok=True)  # (written last: present = the two files complete and as decoded)
    with atomic_path(labels_file) as tmp:
        np.save(tmp, labels)
    with atomic_path(images_file) as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(items), 32, 32, 3))
        for i, (cls, name, data) in enumerate(tqdm(items, desc=f"decoding CIFAR-10 {split}", leave=False)):
            try:
                images[i] = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            except (OSError, ValueError) as e:  # truncated, not a JPEG, or not 32x32
                raise ValueError(f"{path}: cannot read {split}/{cls}/{name} as a 32x32 RGB image ({e})") from e
        images.flush()
        del images
    with atomic_path(seal_file) as tmp:
        Path(tmp).write_text(json.dumps({"seal": seal(cache_dir(), images_file.name,
                                                      _content_digest(images_file, labels_file))}))
    return np.load(images_file, mmap_mode="r"), labels


def _jpeg_source(kind: str, path: Path, split: str) -> dict:
    return {"kind": kind, "split": split, **file_identity(path if kind == "jpeg-tar" else path / split)}


class _ArraysOnly(pickle.Unpickler):
    """Builds only what CIFAR's pickles hold (numpy arrays, lists, dicts, strings, numbers): any other
    global a crafted file names (``os.system``, say) is refused instead of being called."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which CIFAR files never hold; refusing to "
                                         "unpickle it (a file that does may run code)")
        return super().find_class(module, name)


def load_cifar_pickle(path: Path) -> dict:
    """A CIFAR pickle (``data``, labels, class names) read without running anything it names."""
    try:
        with open(path, "rb") as f:
            entry = _ArraysOnly(f, encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, AttributeError, IndexError) as e:
        raise ValueError(f"{path} is not a CIFAR pickle: {e}") from e
    if not isinstance(entry, dict):
        raise ValueError(f"{path} is not a CIFAR pickle: it holds a {type(entry).__name__}, not a dict")
    return entry


class CIFAR10(LabelledImages):
    """CIFAR-10 split as float [0,1] CHW tensors (batch-fetched, memory-mapped for JPEG sources).

    Args:
        split: "train" or "test".
        root: where to look first (see module docstring); None searches the usual places.
    """

    classes = CIFAR10_CLASSES

    def __init__(self, split: str = "test", root: str | os.PathLike | None = None,
                 indices: Sequence[int] | None = None):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        self.split = split
        self.kind, self.source = locate_cifar10(root)
        if self.kind == "torchvision":
            import torchvision

            try:  # (torchvision checks every file against CIFAR-10's published md5 before unpickling it)
                ds = torchvision.datasets.CIFAR10(str(self.source), train=split == "train", download=False)
            except RuntimeError as e:
                raise DataNotFoundError(f"{self.source / 'cifar-10-batches-py'} is not the CIFAR-10 release: its "
                                        f"files do not match their published checksums ({e})") from e
            self.images, self.labels = ds.data, np.asarray(ds.targets, dtype=np.int64)
            self.source_identity = {"kind": "torchvision", "split": split,
                                    **file_identity(self.source / "cifar-10-batches-py")}
        else:
            self.images, self.labels = _decode_jpegs(self.kind, self.source, split)
            self.source_identity = _jpeg_source(self.kind, self.source, split)
        self.indices = np.arange(len(self.labels)) if indices is None else np.asarray(indices)

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # One fancy-index read per batch instead of one per image.
        idx = self.indices[np.asarray(indices)]
        order = np.argsort(idx)
        batch = np.empty((len(idx), 32, 32, 3), dtype=np.uint8)
        batch[order] = self.images[idx[order]]
        x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255).contiguous()
        return x, torch.from_numpy(self.labels[idx])


class CIFAR100(CIFAR10):
    """CIFAR-100 (fine labels) from a torchvision root holding ``cifar-100-python``; never downloads.

    The pickles are read without torchvision's checksum (so a root made elsewhere works), through an
    unpickler that builds only arrays, lists, dicts and strings (:func:`load_cifar_pickle`).
    """

    def __init__(self, split: str = "test", root: str | os.PathLike = "data", indices: Sequence[int] | None = None):
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        folder = Path(root).expanduser() / "cifar-100-python"
        if not (folder / split).is_file():
            raise DataNotFoundError(f"CIFAR-100 not found: no {folder / split} (a torchvision root holds "
                                    "cifar-100-python/{train,test,meta}; torchvision.datasets.CIFAR100(root, "
                                    "download=True) makes one where there is internet)")
        self.split, self.kind, self.source = split, "torchvision", folder.parent.resolve()
        entry, meta = load_cifar_pickle(folder / split), load_cifar_pickle(folder / "meta")
        try:
            self.images = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            self.labels = np.asarray(entry["fine_labels"], dtype=np.int64)
            self.classes = tuple(str(c) for c in meta["fine_label_names"])
        except (KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{folder} does not hold CIFAR-100 as torchvision writes it ({e!r} missing or "
                             "malformed)") from e
        if len(self.labels) != len(self.images) or (len(self.labels) and not 0 <= self.labels.min() <= self.labels.max()
                                                    < len(self.classes)):
            raise ValueError(f"{folder / split}: {len(self.images)} images, {len(self.labels)} labels of "
                             f"{len(self.classes)} classes do not fit together")
        self.source_identity = {"kind": "cifar100", "split": split, "data": file_identity(folder / split),
                                "meta": file_identity(folder / "meta")}
        self.indices = np.arange(len(self.labels)) if indices is None else np.asarray(indices)


DATA_FORMS = ("nothing (CIFAR-10 found in the usual places)", "a CIFAR-10 source (torchvision root, JPEG tree or "
              ".tar.gz)", "cifar100:ROOT or a torchvision root holding cifar-100-python", "an image folder "
              "ROOT/<class>/*.jpg (or ROOT/{train,val}/<class>/*.jpg)")


def open_dataset(data: str | os.PathLike | None = None, split: str = "test", *, image_size: int = 224) -> Dataset:
    """The dataset ``--data`` names (see ``DATA_FORMS``), with ``labels`` (all images), ``indices``
    (those kept), ``classes`` and ``description``.

    Image folders with ``train`` and ``val`` (or ``test``) sub-folders give those splits; a folder
    without them is both splits (rankings probe the images they defend: say so when reporting).
    """
    from .image_folder import ImageFolder, class_folders

    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    text = None if data is None else str(data)
    if text is None or text.startswith("cifar10:"):
        ds = CIFAR10(split, None if text is None else Path(text[len("cifar10:"):]))
        ds.description = f"CIFAR-10 ({'JPEG copy' if ds.kind.startswith('jpeg') else ds.kind}) {split}"
        return ds
    if text.startswith("cifar100:"):
        root = Path(text[len("cifar100:"):])
    else:
        root = Path(text).expanduser()
        cifar10, cifar100 = _kind(root) is not None, (root / "cifar-100-python").is_dir()
        if cifar10 and cifar100:
            raise ValueError(f"{root} holds both CIFAR-10 and CIFAR-100: pass cifar10:{root} or cifar100:{root}")
        if cifar10:
            return open_dataset("cifar10:" + text, split)
        if not cifar100:
            subsets = {"train": ["train"], "test": ["val", "test"]}[split]
            folder = next((root / s for s in subsets if class_folders(root / s)), root)
            if not class_folders(folder):
                raise DataNotFoundError(f"--data {text}: found no dataset there; it takes " + "; ".join(DATA_FORMS))
            ds = ImageFolder(folder, image_size=image_size)
            ds.description = f"image folder {folder} ({image_size} x {image_size} centre crops)"
            return ds
    ds = CIFAR100(split, root)
    ds.description = f"CIFAR-100 {split}"
    return ds


def _rank_in_class(labels: np.ndarray) -> np.ndarray:
    rank = np.empty(len(labels), dtype=np.int64)
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        rank[members] = np.arange(len(members))
    return rank


ORDERS = ("class", "round-robin")  # how a class-balanced selection is ordered (balanced_indices)


def balanced_indices(labels: Sequence[int] | np.ndarray, n: int | None = None, *, per_class: int | None = None,
                     offset: int = 0, order: str = "class") -> np.ndarray:
    """Class-balanced indices, by one rule: images are taken by their rank within their class (the
    first of every class, then the second, ...), from rank ``offset``; a class that runs out drops
    out. ``n`` takes the first ``n`` in that order, ``per_class`` every image of rank below
    ``offset + per_class`` (so ``n = per_class x classes`` is the same set when no class is short);
    neither: all from ``offset``. Returned in ``order``: "class" (every class's images together, in
    rank order) or "round-robin" (the order they are taken in, so the first ``n`` of a longer selection
    are the ``n``-image selection, batch for batch)."""
    labels = np.asarray(labels)
    if n is not None and per_class is not None:
        raise ValueError("pass n or per_class, not both")
    if order not in ORDERS:
        raise ValueError(f"order {order!r}: expected one of {', '.join(ORDERS)}")
    rank = _rank_in_class(labels)
    ranked = np.lexsort((labels, rank))  # by rank, then class: round robin
    ranked = ranked[rank[ranked] >= offset]
    if per_class is not None:
        ranked = ranked[rank[ranked] < offset + per_class]
    elif n is not None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or not 1 <= n <= len(ranked):
            raise ValueError(f"asked for {n!r} images; the dataset has {len(ranked)}"
                             + (f" from rank {offset} of each class" if offset else ""))
        ranked = ranked[:n]
    return ranked if order == "round-robin" else ranked[np.lexsort((rank[ranked], labels[ranked]))]


def balanced_loader(dataset: Dataset, n: int | None = None, batch_size: int = 256, *,
                    per_class: int | None = None, order: str = "class", offset: int = 0) -> DataLoader:
    """A DataLoader over :func:`balanced_indices` of ``dataset`` (``n`` images, or ``per_class`` of
    each class, or all of them, from rank ``offset`` of each class, in ``order``). Sets ``dataset.indices``."""
    dataset.indices = balanced_indices(dataset.labels, n, per_class=per_class, order=order, offset=offset)
    return DataLoader(dataset, batch_size=batch_size, collate_fn=collate)


def probe_used(dataset, per_class: int | None) -> str:
    """What a probe drawn by :func:`balanced_loader` holds, as a rankings file records it: the counts
    actually taken (a class with fewer images than asked gives what it has)."""
    counts = np.bincount(np.asarray(dataset.labels)[np.asarray(dataset.indices)])
    counts = counts[counts > 0]
    if per_class is None:
        return f"all {counts.sum():,} images"
    taken = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
    short = "" if counts.max() >= per_class and counts.min() == per_class else f" (of the {per_class} asked for)"
    return f"first {taken} per class{short}, {counts.sum():,} images"


def cifar10_loader(split: str = "test", per_class: int | None = None, batch_size: int = 256,
                   offset: int = 0, shuffle: bool = False, root=None, seed: int = 0) -> DataLoader:
    """A DataLoader of (images [B,3,32,32] in [0,1], labels [B]) over CIFAR-10.

    ``per_class`` keeps a class-balanced subset: the first ``per_class`` images of each class
    (after ``offset``), e.g. ``per_class=100`` on "test" is the first 100 test images per class.
    """
    ds = CIFAR10(split, root)
    if per_class is not None or offset:
        ds.indices = balanced_indices(ds.labels, per_class=per_class, offset=offset)
    gen = torch.Generator("cpu").manual_seed(seed)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, collate_fn=collate, generator=gen)


def foolbox_cifar10() -> tuple[torch.Tensor, torch.Tensor]:
    """The 20 lossless CIFAR-10 test images (first 20 of the test split) shipped by foolbox 3.3.4.

    Returns (images [20,3,32,32] in [0,1], labels [20]).
    """
    return _foolbox_images("cifar10")


def foolbox_imagenet() -> tuple[torch.Tensor, torch.Tensor]:
    """The 20 ImageNet validation images shipped by foolbox 3.3.4, resized to 224x224."""
    return _foolbox_images("imagenet", size=224)


def _foolbox_images(dataset: str, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    try:
        import foolbox
    except ImportError as e:
        raise ImportError("the foolbox test images need `pip install foolbox==3.3.4`") from e
    folder = Path(foolbox.__file__).parent / "data"
    files = sorted(f for f in folder.iterdir() if f.name.startswith(dataset + "_"))
    xs, ys = [], []
    for f in files:
        img = Image.open(f).convert("RGB")
        if size is not None:
            img = img.resize((size, size), Image.BILINEAR)
        xs.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).float() / 255)
        ys.append(int(f.stem.split("_")[-1]))
    return torch.stack(xs), torch.tensor(ys)
