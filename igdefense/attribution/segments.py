"""Superpixels for LIME: scikit-image's SLIC or quickshift, renumbered to ids 0..n-1 per image.

The `lime` package's default (quickshift, kernel_size=4, max_dist=200) gives about 2 segments on a
32x32 image: useless. Measured on CIFAR-10 (../shared/reference/lime.md): SLIC n_segments=50 gives
about 22, quickshift kernel_size=1, max_dist=10, ratio=0.5 about 45.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch


def segment(images: torch.Tensor, method: Literal["slic", "quickshift"] = "slic", *, n_segments: int = 50,
            compactness: float = 10.0, kernel_size: float = 1, max_dist: float = 10, ratio: float = 0.5,
            seed: int = 0) -> torch.Tensor:
    """Superpixel ids (B, H, W), int64, numbered 0..n_b-1 in each image (counts may differ).

    Args:
        images: (B, 3, H, W) float in [0, 1].
        method: "slic" (``n_segments``, ``compactness``) or "quickshift" (``kernel_size``,
            ``max_dist``, ``ratio``, ``seed``), as scikit-image computes them.
    """
    from ..validation import check_images

    try:
        from skimage.segmentation import quickshift, slic
    except ImportError as e:
        raise ImportError("segment() needs scikit-image: pip install 'igdefense[lime]'") from e
    check_images(images)
    if method not in ("slic", "quickshift"):
        raise ValueError(f"unknown segmentation {method!r}; choose 'slic' or 'quickshift'")
    out = []
    for img in images.detach().cpu().permute(0, 2, 3, 1).double().numpy():
        if method == "slic":
            ids = slic(img, n_segments=n_segments, compactness=compactness, start_label=0)
        else:
            ids = quickshift(img, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio, rng=seed)
        out.append(np.unique(ids, return_inverse=True)[1].reshape(ids.shape))  # ids 0..n-1, no gaps
    return torch.from_numpy(np.stack(out)).long()
