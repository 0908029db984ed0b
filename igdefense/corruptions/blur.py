"""Blur corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), CIFAR parameters.

Every function takes (B, 3, H, W) floats in [0, 1], a severity 1..5 and a torch.Generator, and
draws its randomness from that generator in the order written.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from . import filters

GAUSSIAN = (0.4, 0.6, 0.7, 0.8, 1.0)  # sigma
GLASS = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))  # sigma, max_delta, iterations
DEFOCUS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))  # disk radius, alias_blur
MOTION = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))  # ImageMagick radius, sigma
ZOOM = tuple(np.arange(1, stop, 0.01) for stop in (1.06, 1.11, 1.16, 1.21, 1.26))  # zoom factors, as np.arange gives


def to_8bit(x: torch.Tensor, rounding: str = "floor") -> torch.Tensor:
    """Quantise [0, 1] values to k/255: "floor" as numpy's uint8 cast, "round" as a PNG round trip."""
    offset = 1e-4 if rounding == "floor" else 0.5  # 1e-4: k/255 * 255 may land a hair below k in float
    return torch.floor(x.clamp(0, 1) * 255 + offset) / 255


def gaussian_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    return filters.gaussian(x, GAUSSIAN[severity - 1]).clamp(0, 1)


def glass_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Blur, shuffle, blur. The script's "swap" of pixel (h, w) with a random neighbour in
    [-d, d) x [-d, d) is, through numpy view aliasing, a copy of the neighbour into (h, w): we do
    what CIFAR-10-C contains. Rows and columns are scanned from H - d down to d + 1."""
    sigma, d, iterations = GLASS[severity - 1]
    b, _, h, w = x.shape
    x = to_8bit(filters.gaussian(x, sigma))  # the script casts to uint8 here
    positions = [(i, j) for i in range(h - d, d, -1) for j in range(w - d, d, -1)]
    offsets = torch.randint(-d, d, (b, iterations, len(positions), 2), generator=g).to(x.device)  # (dx, dy)
    batch = torch.arange(b, device=x.device)
    for it in range(iterations):
        for p, (i, j) in enumerate(positions):
            dx, dy = offsets[:, it, p, 0], offsets[:, it, p, 1]
            x[:, :, i, j] = x[batch, :, i + dy, j + dx]
    return filters.gaussian(x, sigma).clamp(0, 1)


@lru_cache(maxsize=None)
def disk_kernel(radius: float, alias_blur: float) -> torch.Tensor:
    """The script's anti-aliased disk (radius <= 8): a 17 x 17 disk normalised to sum 1, smoothed by
    OpenCV's 3 x 3 GaussianBlur (sigma ``alias_blur``, border REFLECT_101)."""
    t = torch.arange(-8, 9, dtype=torch.float64)
    disk = ((t[:, None] ** 2 + t[None, :] ** 2) <= radius**2).double()
    disk /= disk.sum()
    k = torch.exp(-((torch.arange(3) - 1.0) ** 2) / (2 * alias_blur**2))
    k /= k.sum()
    return filters.correlate1d(filters.correlate1d(disk, k, -1, "mirror"), k, -2, "mirror")


def defocus_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """OpenCV filter2D with the disk kernel on each channel, border REFLECT_101."""
    k = disk_kernel(*DEFOCUS[severity - 1]).to(x)
    b, c, h, w = x.shape
    rows = filters.source_index(h, 8, "mirror").to(x.device)
    cols = filters.source_index(w, 8, "mirror").to(x.device)
    padded = x[:, :, rows][:, :, :, cols].reshape(b * c, 1, h + 16, w + 16)
    return F.conv2d(padded, k[None, None]).view(b, c, h, w).clamp(0, 1)


def motion_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """ImageMagick's motion blur at an angle uniform in [-45, 45] degrees; 8-bit output (PNG round trip)."""
    radius, sigma = MOTION[severity - 1]
    angle = torch.rand(x.shape[0], generator=g, dtype=torch.float64) * 90 - 45
    return to_8bit(filters.motion_blur(x, radius, sigma, angle), "round")


def zoom_blur(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Mean of the image and its centre zooms by each factor (linear interpolation)."""
    out = x.clone()
    for factor in ZOOM[severity - 1]:
        out += filters.zoom(x, float(factor))
    return (out / (len(ZOOM[severity - 1]) + 1)).clamp(0, 1)
