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
    from .._validation import check_images, check_number

    try:
        from skimage.segmentation import quickshift, slic
    except ImportError as e:
        raise ImportError("segment() needs scikit-image: pip install 'igdefense[lime]'") from e
    check_images(images)
    if method not in ("slic", "quickshift"):
        raise ValueError(f"unknown segmentation {method!r}; choose 'slic' or 'quickshift'")
    check_number("n_segments", n_segments, integer=True, low=1)
    for name, value in (("compactness", compactness), ("kernel_size", kernel_size), ("max_dist", max_dist)):
        check_number(name, value, low=0, low_open=True)
    check_number("ratio", ratio, low=0, high=1)
    out = []
    for img in images.detach().cpu().permute(0, 2, 3, 1).double().numpy():
        if method == "slic":
            ids = slic(img, n_segments=n_segments, compactness=compactness, start_label=0)
        else:
            ids = quickshift(img, kernel_size=kernel_size, max_dist=max_dist, ratio=ratio, rng=seed)
        out.append(np.unique(ids, return_inverse=True)[1].reshape(ids.shape))  # ids 0..n-1, no gaps
    return torch.from_numpy(np.stack(out)).long().to(images.device)


def segment_counts(segments: torch.Tensor) -> torch.Tensor:
    """Segment count of each image (B,); raises ValueError unless ids are 0..n-1 with none missing."""
    if segments.numel() and segments.min() < 0:
        raise ValueError("segment ids must be >= 0 (0..n-1 per image)")
    counts = segments.flatten(1).amax(1) + 1
    for b, seg in enumerate(segments):
        present = torch.bincount(seg.flatten(), minlength=int(counts[b])) > 0
        if not present.all():
            missing = (~present).nonzero().flatten()[:5].tolist()
            raise ValueError(f"segment ids of image {b} have gaps (no pixel has ids {missing}...): number them "
                             "0..n-1, e.g. with igdefense.attribution.segment or np.unique(ids, return_inverse=True)")
    return counts


def check_segments(segments: torch.Tensor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate superpixel ids for ``images``: returns (segments as int64 on the images' device,
    each image's segment count (B,) on the CPU)."""
    batch, _, height, width = images.shape
    if not isinstance(segments, torch.Tensor) or segments.shape != (batch, height, width) \
            or segments.is_floating_point():
        raise ValueError(f"segments must be an integer tensor of shape {(batch, height, width)} (one id per pixel), "
                         f"got {getattr(segments, 'dtype', type(segments).__name__)} "
                         f"{tuple(getattr(segments, 'shape', ()))}")
    return segments.long().to(images.device), segment_counts(segments.long().cpu())


def superpixel_sum(pixel_scores: torch.Tensor, segments: torch.Tensor, n: int) -> torch.Tensor:
    """Sum of (B, C, H, W) or (B, H, W) pixel scores over each superpixel: (B, n)."""
    if pixel_scores.ndim == 4:
        pixel_scores = pixel_scores.sum(1)
    out = torch.zeros(len(segments), n, dtype=pixel_scores.dtype, device=pixel_scores.device)
    return out.scatter_add_(1, segments.flatten(1), pixel_scores.flatten(1))


def hidden_fill(images: torch.Tensor, segments: torch.Tensor, hide_color: float | None = None) -> torch.Tensor:
    """(B, C, H, W) image of what hidden superpixels show: each superpixel's mean colour (None, as
    lime's ``hide_color=None``), or a constant."""
    if hide_color is not None:
        return torch.full_like(images, float(hide_color))
    b, c = images.shape[:2]
    widest = int(segments.max()) + 1 if segments.numel() else 1
    flat = segments.flatten(1)  # (B, HW)
    sums = torch.zeros(b, c, widest, dtype=torch.float64, device=images.device)
    sums.scatter_add_(2, flat[:, None].expand(-1, c, -1), images.flatten(2).double())
    sizes = torch.zeros(b, widest, dtype=torch.float64, device=images.device).scatter_add_(
        1, flat, torch.ones_like(flat, dtype=torch.float64))
    means = sums / sizes.clamp(min=1)[:, None]  # (B, C, N)
    return means.gather(2, flat[:, None].expand(-1, c, -1)).view_as(images).to(images.dtype)
