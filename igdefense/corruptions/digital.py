"""Digital corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), CIFAR parameters.

Every function takes (B, 3, H, W) floats in [0, 1], a severity 1..5 and a torch.Generator, and
draws its randomness from that generator in the order written.
"""

from __future__ import annotations

import io

import numpy as np
import torch
from PIL import Image

from . import filters
from .blur import to_8bit

BRIGHTNESS = (0.05, 0.1, 0.15, 0.2, 0.3)  # added to V
CONTRAST = (0.75, 0.5, 0.4, 0.3, 0.15)
SATURATE = ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))  # S scale, shift
ELASTIC = tuple((32 * a, 32 * s, 32 * f) for a, s, f in  # alpha, sigma, affine jitter, in pixels
                ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03)))
PIXELATE = (0.95, 0.9, 0.85, 0.75, 0.65)
JPEG = (80, 65, 58, 50, 40)  # quality


def brightness(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    hsv = filters.rgb_to_hsv(x)
    hsv[:, 2] = (hsv[:, 2] + BRIGHTNESS[severity - 1]).clamp(0, 1)
    return filters.hsv_to_rgb(hsv).clamp(0, 1)


def contrast(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    mean = x.mean((2, 3), keepdim=True)
    return ((x - mean) * CONTRAST[severity - 1] + mean).clamp(0, 1)


def saturate(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    scale, shift = SATURATE[severity - 1]
    hsv = filters.rgb_to_hsv(x)
    hsv[:, 1] = (hsv[:, 1] * scale + shift).clamp(0, 1)
    return filters.hsv_to_rgb(hsv).clamp(0, 1)


def elastic_transform(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """A random affine warp (three points moved by up to ``affine`` pixels; OpenCV warpAffine:
    bilinear, border REFLECT_101), then a displacement field: uniform noise
    smoothed with ``sigma`` (scipy, mode reflect, truncate 3) times ``alpha``, bilinear, reflect."""
    alpha, sigma, jitter = ELASTIC[severity - 1]
    b, _, h, w = x.shape
    centre, size = torch.tensor([h // 2, w // 2], dtype=torch.float64), min(h, w) // 3
    src = torch.stack([centre + size, torch.stack([centre[0] + size, centre[1] - size]), centre - size])  # (x, y)
    dst = src + (torch.rand(b, 3, 2, generator=g, dtype=torch.float64) * 2 - 1) * jitter
    dx = filters.gaussian(torch.rand(b, h, w, generator=g, dtype=torch.float64) * 2 - 1, sigma, mode="reflect",
                          truncate=3) * alpha
    dy = filters.gaussian(torch.rand(b, h, w, generator=g, dtype=torch.float64) * 2 - 1, sigma, mode="reflect",
                          truncate=3) * alpha
    # warpAffine reads each output pixel at the inverse affine image: the affine taking dst to src
    ones = torch.ones(b, 3, 1, dtype=torch.float64)
    inverse = torch.linalg.solve(torch.cat([dst, ones], 2), src.expand(b, 3, 2)).transpose(1, 2)  # (B, 2, 3)
    rows, cols = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                                indexing="ij")
    grid = torch.stack([cols, rows, torch.ones_like(rows)])  # (3, H, W) as (x, y, 1)
    back = torch.einsum("bij,jhw->bihw", inverse, grid)  # (B, 2, H, W) as (x, y)
    x = filters.bilinear(x, back[:, 1], back[:, 0], "mirror")
    return filters.bilinear(x, rows + dy, cols + dx, "reflect").clamp(0, 1)


def pixelate(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """PIL BOX resize to int(size * c) and back, on 8-bit values."""
    c = PIXELATE[severity - 1]
    h, w = x.shape[-2:]
    small = filters.box_resize_8bit(to_8bit(x, "round"), int(h * c), int(w * c))
    return filters.box_resize_8bit(small, h, w)


def jpeg_compression(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """PIL JPEG round trip at the severity's quality (per image: libjpeg has no batch API)."""
    quality = JPEG[severity - 1]
    images = (to_8bit(x, "round") * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    out = []
    for img in images:
        buffer = io.BytesIO()
        Image.fromarray(img).save(buffer, "JPEG", quality=quality)
        out.append(np.asarray(Image.open(buffer)))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x) / 255
