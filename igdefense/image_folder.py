"""Any folder of images with one sub-folder per class (torchvision's ImageFolder layout, e.g. ImageNet's
validation set sorted into ``val/<wnid>/*.JPEG``), decoded batch by batch, resized and centre-cropped.

Labels, from the class folder names:
- ImageNet WordNet ids (``n01440764``...): their index among ImageNet's 1,000 classes (timm's list),
  so a folder holding a few ImageNet classes still gets the labels an ImageNet model predicts;
- integers (``243``...): the integer itself;
- anything else: the index in sorted order, as ``torchvision.datasets.ImageFolder`` numbers them.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from ._identity import file_identity
from ._validation import MAX_SIDE
from .images import LabelledImages

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp", ".tif", ".tiff")
CROP_FRACTION = 0.875  # resize the shorter side to size / 0.875, crop the centre: 256 -> 224 (ImageNet's eval)


def _images_in(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)


def _has_images(folder: Path) -> bool:
    return any(f.suffix.lower() in IMAGE_SUFFIXES and f.is_file() for f in folder.iterdir())  # stops at the first


def class_folders(root: Path) -> list[Path]:
    """The sub-folders of ``root`` that hold images (empty when ``root`` is no image folder)."""
    if not root.is_dir():
        return []
    return sorted(d for d in root.iterdir() if d.is_dir() and _has_images(d))


def _label_scheme(names: list[str]) -> tuple[tuple[str, ...], list[int]]:
    """(class names indexed by label, each folder's label); see the module docstring."""
    if all(re.fullmatch(r"n\d{8}", n) for n in names):
        try:
            from timm.data import ImageNetInfo
        except ImportError as e:
            raise ImportError("class folders named by ImageNet WordNet id need timm's class list: "
                              "pip install 'igdefense[timm]'") from e
        info = ImageNetInfo()
        wnids = info.label_names()
        unknown = [n for n in names if n not in wnids]
        if unknown:
            raise ValueError(f"class folders {unknown[:5]} are not ImageNet-1k WordNet ids")
        classes = tuple(info.index_to_description(i) for i in range(len(wnids)))
        return classes, [wnids.index(n) for n in names]
    if all(n.isdigit() for n in names):
        labels = [int(n) for n in names]
        return tuple(str(i) for i in range(max(labels) + 1)), labels
    return tuple(names), list(range(len(names)))


class ImageFolder(LabelledImages):
    """Images under ``root/<class>/`` as float [0, 1] (3, size, size) tensors.

    Args:
        root: the folder holding one sub-folder per class.
        image_size: the side of the centre crop (224 for most ImageNet models).
        indices: the images to keep, as positions in the sorted file list (``labels`` covers all).
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 224, indices: Sequence[int] | None = None):
        if isinstance(image_size, bool) or not isinstance(image_size, int) or not 8 <= image_size <= MAX_SIDE:
            raise ValueError(f"image_size must be an integer in [8, {MAX_SIDE}], got {image_size!r}")
        self.root = Path(root)
        folders = class_folders(self.root)
        if not folders:
            raise FileNotFoundError(f"{self.root} holds no class folders with images: expected "
                                    f"{self.root}/<class>/<image>{{{','.join(IMAGE_SUFFIXES)}}}")
        empty = sorted(d.name for d in self.root.iterdir()
                       if d.is_dir() and not d.name.startswith(".") and not _has_images(d))
        if empty:  # (left out, every later class's label would shift by one: torchvision refuses it too)
            raise ValueError(f"{self.root}: class folder(s) {empty[:5]} hold no images "
                             f"({', '.join(IMAGE_SUFFIXES)}); add their images or move the folders out")
        self.classes, folder_labels = _label_scheme([d.name for d in folders])
        files = [(f, label) for d, label in zip(folders, folder_labels) for f in _images_in(d)]
        self.files = [f for f, _ in files]
        self.labels = np.array([label for _, label in files], dtype=np.int64)
        self.image_size = image_size
        self.indices = np.arange(len(self.files)) if indices is None else np.asarray(indices)
        self.source_identity = {"kind": "image-folder", "image_size": image_size, **file_identity(self.root)}

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = self.indices[np.asarray(indices)]
        x = torch.stack([self._load(self.files[i]) for i in idx])
        return x, torch.from_numpy(self.labels[idx])

    def _load(self, path: Path) -> torch.Tensor:
        from torchvision.transforms import functional as TF

        try:
            img = Image.open(path).convert("RGB")
        except (OSError, Image.DecompressionBombError) as e:  # (a header claiming billions of pixels: refused)
            raise OSError(f"cannot read image {path}: {e}") from e
        img = TF.resize(img, round(self.image_size / CROP_FRACTION), interpolation=TF.InterpolationMode.BILINEAR)
        img = TF.center_crop(img, self.image_size)
        return TF.pil_to_tensor(img).float().div_(255)
