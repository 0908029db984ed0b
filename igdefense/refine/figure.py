"""Explain-why figure: per image, its superpixels and which criterion flagged which of them."""

from __future__ import annotations

import os

import torch

from .flags import CRITERIA, Flags

_EDGE = (0.85, 0.85, 0.85)
_COLOURS = {"irrelevance": (1.0, 0.2, 0.2), "sensitivity": (0.2, 0.5, 1.0), "instability": (1.0, 0.8, 0.1)}


def plot_flags(images: torch.Tensor, segments: torch.Tensor, flags: Flags, path: str | os.PathLike,
               titles: list[str] | None = None) -> None:
    """One row per image: the image, its superpixel boundaries, then one panel per criterion with
    the superpixels it flagged tinted (irrelevance red, sensitivity blue, instability yellow)."""
    try:
        from matplotlib.figure import Figure  # (no pyplot: a notebook's backend stays as it is)
        from skimage.segmentation import mark_boundaries
    except ImportError as e:
        raise ImportError("plot_flags needs matplotlib and scikit-image: pip install 'igdefense[plot,lime]'") from e
    rows = len(images)
    fig = Figure(figsize=(2 * (2 + len(CRITERIA)), 2 * rows))
    axes = fig.subplots(rows, 2 + len(CRITERIA), squeeze=False)
    for b in range(rows):
        # 4x nearest upsampling: at 32x32 the one-pixel superpixel boundaries would cover the image
        img = images[b].permute(1, 2, 0).cpu().double().numpy().repeat(4, 0).repeat(4, 1)
        seg = segments[b].cpu().numpy().repeat(4, 0).repeat(4, 1)
        panels = [("image" if titles is None else titles[b], img),
                  ("superpixels", mark_boundaries(img, seg, color=_EDGE))]
        for c in CRITERIA:
            hit = getattr(flags, c)[b].cpu().numpy()[seg]  # (H, W) bool
            tinted = img.copy()
            tinted[hit] = 0.4 * tinted[hit] + 0.6 * torch.tensor(_COLOURS[c]).numpy()
            panels.append((f"{c} ({int(getattr(flags, c)[b].sum())})", mark_boundaries(tinted, seg, color=_EDGE)))
        for ax, (title, picture) in zip(axes[b], panels):
            ax.imshow(picture, interpolation="nearest")
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
