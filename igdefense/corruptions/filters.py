"""Batched image operations with the exact semantics of the libraries CIFAR-10-C was generated with.

Each function works on (..., H, W) or (B, C, H, W) tensors and reproduces one library call of
the generation script: scipy/scikit-image Gaussian filtering, scipy's linear ``zoom``, PIL's BOX
resize, scikit-image's HSV conversion and ImageMagick's motion blur.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch


def fold(i: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Map integer positions (any range) onto 0..n-1 under a boundary mode: "nearest" (edge),
    "reflect" (scipy's: d c b a | a b c d) or "mirror" (OpenCV's REFLECT_101: d c b | a b c d)."""
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "reflect":
        i = i % (2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":
        period = max(2 * n - 2, 1)
        i = i % period
        return torch.where(i >= n, period - i, i)
    raise ValueError(f"unknown boundary mode {mode!r}")


def source_index(n: int, pad: int, mode: str) -> torch.Tensor:
    """Indices into a length-``n`` axis for positions -pad .. n+pad-1 under a boundary ``mode`` (see fold)."""
    return fold(torch.arange(-pad, n + pad), n, mode)


def bilinear(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, mode: str) -> torch.Tensor:
    """Sample (B, C, H, W) images at real (B, H, W) coordinates by bilinear interpolation; the four
    neighbours are folded into the image with boundary ``mode`` (see fold)."""
    b, c, h, w = x.shape
    rows, cols = rows.to(x.device), cols.to(x.device)
    r0, c0 = rows.floor(), cols.floor()
    fr, fc = (rows - r0).to(x)[:, None], (cols - c0).to(x)[:, None]
    r0, c0 = r0.long(), c0.long()
    flat = x.flatten(2)

    def at(r, q):
        idx = (fold(r, h, mode) * w + fold(q, w, mode)).flatten(1)
        return flat.gather(2, idx[:, None, :].expand(b, c, h * w)).view(b, c, h, w)

    top = at(r0, c0) * (1 - fc) + at(r0, c0 + 1) * fc
    bottom = at(r0 + 1, c0) * (1 - fc) + at(r0 + 1, c0 + 1) * fc
    return top * (1 - fr) + bottom * fr


def correlate1d(x: torch.Tensor, kernel: torch.Tensor, dim: int, mode: str) -> torch.Tensor:
    """Correlate ``x`` with an odd-length 1-D ``kernel`` along ``dim`` (-1 or -2), boundary ``mode``:
    one (n, n) matrix product, the padding folded into the matrix."""
    if dim not in (-1, -2):
        raise ValueError(f"dim must be -1 or -2, got {dim}")
    n, r = x.shape[dim], len(kernel) // 2
    a = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)
    for j, w in enumerate(kernel.tolist()):
        a.index_put_((rows, fold(rows + j - r, n, mode)), torch.full((n,), w, dtype=torch.float64), accumulate=True)
    a = a.to(x)
    return x @ a.T if dim == -1 else a @ x


def gaussian_kernel(sigma: float, truncate: float) -> torch.Tensor:
    """scipy.ndimage's sampled Gaussian: radius int(truncate * sigma + 0.5), normalised to sum 1."""
    r = int(truncate * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * t**2 / sigma**2)
    return k / k.sum()


def gaussian(x: torch.Tensor, sigma: float, *, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """``skimage.filters.gaussian`` over the last two dims (channels separately); sigma 0 is the identity."""
    if sigma <= 1e-15:  # scipy skips such axes
        return x.clone()
    k = gaussian_kernel(sigma, truncate)
    return correlate1d(correlate1d(x, k, -1, mode), k, -2, mode)


def linear_zoom_matrix(size: int, zoom: float) -> torch.Tensor:
    """(size, size) matrix A with A @ v = the generation script's ``clipped_zoom`` of v along one axis:
    the centre ceil(size / zoom) pixels, ``scipy.ndimage.zoom(order=1)`` (corner-aligned, output
    round(n * zoom) pixels), centre ``size`` pixels kept."""
    crop = int(np.ceil(size / zoom))
    top = (size - crop) // 2
    out = int(round(crop * zoom))
    trim = (out - size) // 2
    scale = (crop - 1) / (out - 1) if out > 1 else 0.0
    coord = (torch.arange(trim, trim + size, dtype=torch.float64) * scale).clamp(0, crop - 1)
    lo = coord.floor().long().clamp(max=crop - 2) if crop > 1 else torch.zeros(size, dtype=torch.long)
    frac = coord - lo
    a = torch.zeros(size, size, dtype=torch.float64)
    rows = torch.arange(size)
    a[rows, top + lo] += 1 - frac
    if crop > 1:
        a[rows, top + lo + 1] += frac
    return a


def zoom(x: torch.Tensor, factor: float) -> torch.Tensor:
    """``clipped_zoom`` of the last two (square) dims by ``factor`` (>= 1)."""
    a = linear_zoom_matrix(x.shape[-1], factor).to(x)
    return a @ x @ a.T


def box_resize_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of PIL's ``Image.resize(..., Image.BOX)`` along one axis: an input
    pixel counts (weight 1, then normalised) when its centre lies in the output pixel's support,
    a half-open interval (-1/2, 1/2] in units of the input step (Pillow's box_filter)."""
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    for o in range(n_out):
        center = (o + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        for i in range(lo, hi):
            t = (i - center + 0.5) / filterscale
            m[o, i] = 1.0 if -0.5 < t <= 0.5 else 0.0
        m[o] /= m[o].sum()
    return m


def box_resize_8bit(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """PIL's BOX resize of 8-bit images (values k/255) to height x width: the horizontal pass, then
    the vertical one, each rounded to 8 bits as PIL stores its intermediate image."""
    h = box_resize_matrix(x.shape[-1], width).to(x)
    v = box_resize_matrix(x.shape[-2], height).to(x)
    x = torch.round(x * 255)  # in 0..255 so that exact halves stay exact
    x = torch.floor(x @ h.T + 0.5)
    return torch.floor(v @ x + 0.5) / 255


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """``skimage.color.rgb2hsv`` for (B, 3, H, W): hue in [0, 1); ties resolved as scikit-image does
    (blue, then green, then red wins)."""
    r, g, b = rgb.unbind(1)
    v = rgb.amax(1)
    delta = v - rgb.amin(1)
    s = torch.where(delta == 0, torch.zeros_like(v), delta / v.clamp_min(1e-12))
    safe = torch.where(delta == 0, torch.ones_like(delta), delta)
    h = (g - b) / safe
    h = torch.where(g == v, 2 + (b - r) / safe, h)
    h = torch.where(b == v, 4 + (r - g) / safe, h)
    h = torch.where(delta == 0, torch.zeros_like(h), (h / 6) % 1)
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """``skimage.color.hsv2rgb`` for (B, 3, H, W)."""
    h, s, v = hsv.unbind(1)
    sector = torch.floor(h * 6)
    f = h * 6 - sector
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = torch.stack([torch.stack(c, 1) for c in
                         [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]])  # (6, B, 3, H, W)
    index = (sector.long() % 6)[None, :, None].expand(1, *table.shape[1:])
    return table.gather(0, index)[0]


@lru_cache(maxsize=None)
def motion_kernel(radius: float, sigma: float) -> tuple[float, ...]:
    """ImageMagick's MotionBlurImage kernel: width 2 ceil(radius) + 1 taps of a one-sided Gaussian
    exp(-i^2 / 2 sigma^2), i = 0.., normalised to sum 1."""
    width = int(2 * math.ceil(radius) + 1)
    k = [math.exp(-(i * i) / (2.0 * sigma * sigma)) for i in range(width)]
    return tuple(w / sum(k) for w in k)


def motion_blur(x: torch.Tensor, radius: float, sigma: float, angle: torch.Tensor) -> torch.Tensor:
    """ImageMagick's ``-motion-blur radius x sigma + angle`` for (B, C, H, W), one angle (degrees) per
    image: tap i reads the pixel at (row + ceil(i sin a - 1/2), col + ceil(i cos a - 1/2)), edge
    pixels repeated outside the image (ImageMagick's default virtual-pixel method)."""
    kernel = motion_kernel(radius, sigma)
    b, c, h, w = x.shape
    a = torch.deg2rad(angle.to(torch.float64))
    px, py = len(kernel) * torch.sin(a), len(kernel) * torch.cos(a)  # ImageMagick's point.x, point.y
    hyp = torch.hypot(px, py)
    rows, cols = torch.arange(h), torch.arange(w)
    flat = x.flatten(2)
    out = torch.zeros_like(flat)
    for i, k in enumerate(kernel):
        dx = torch.ceil(i * py / hyp - 0.5).long()  # (B,)
        dy = torch.ceil(i * px / hyp - 0.5).long()
        r = (rows[None, :] + dy[:, None]).clamp(0, h - 1)  # (B, H)
        q = (cols[None, :] + dx[:, None]).clamp(0, w - 1)  # (B, W)
        idx = (r[:, :, None] * w + q[:, None, :]).flatten(1).to(x.device)  # (B, H*W)
        out += k * flat.gather(2, idx[:, None, :].expand(b, c, h * w))
    return out.view_as(x)
