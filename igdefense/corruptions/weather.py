"""Weather corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), CIFAR parameters.

Every function takes (B, 3, H, W) floats in [0, 1], a severity 1..5 and a torch.Generator, and
draws its randomness from that generator in the order written. Frost photos and spatter's edge
shading need OpenCV and the frost photos of ``imagecorruptions-imaug`` (``igdefense[corruptions]``).
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from . import filters
from .blur import to_8bit

# loc, scale, zoom, threshold, blur radius, blur sigma, mix
SNOW = ((0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9), (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85), (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8))
FROST = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))  # image weight, frost weight
FOG = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))  # strength, wibble decay
# loc, scale, sigma, threshold, intensity, mode (0 water, 1 mud)
SPATTER = ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
           (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1))
FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")  # the script uses 5 of 6
WATER = (175 / 255, 238 / 255, 238 / 255)  # pale turquoise, RGB
MUD = (63 / 255, 42 / 255, 20 / 255)


def _cv2():
    try:
        import cv2
    except ImportError as e:
        raise ImportError("frost and spatter need OpenCV: pip install 'igdefense[corruptions]'") from e
    return cv2


def snow(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """A Gaussian snow layer, zoomed, thresholded, 8-bit, motion-blurred at an angle in [-135, -45]
    (ImageMagick); the image is lightened towards max(x, 1.5 grey + 0.5); the layer and its
    180-degree rotation are added."""
    loc, scale, zoom, threshold, radius, sigma, mix = SNOW[severity - 1]
    b, _, h, w = x.shape
    layer = (loc + scale * torch.randn(b, h, w, generator=g, dtype=torch.float64)).to(x)
    layer = filters.zoom(layer, zoom)
    layer = to_8bit(torch.where(layer < threshold, torch.zeros_like(layer), layer))[:, None]
    angle = torch.rand(b, generator=g, dtype=torch.float64) * 90 - 135
    layer = to_8bit(filters.motion_blur(layer, radius, sigma, angle), "round")
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]  # OpenCV's RGB2GRAY
    x = mix * x + (1 - mix) * torch.maximum(x, gray * 1.5 + 0.5)
    return (x + layer + layer.flip(-1, -2)).clamp(0, 1)


@lru_cache(maxsize=1)
def frost_photos() -> tuple[torch.Tensor, ...]:
    """The five frost photos (3, h, w) uint8 RGB, resized by 0.2 with OpenCV (bilinear) as the script does."""
    cv2 = _cv2()
    spec = importlib.util.find_spec("imagecorruptions")  # locate without importing (it imports numba)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("frost needs the photos of imagecorruptions-imaug: pip install 'igdefense[corruptions]'")
    folder = Path(list(spec.submodule_search_locations)[0]) / "frost"
    photos = []
    for name in FROST_FILES:
        bgr = cv2.imread(str(folder / name))
        if bgr is None:
            raise FileNotFoundError(f"frost photo {folder / name} is missing or unreadable; reinstall "
                                    "imagecorruptions-imaug")
        small = cv2.resize(bgr, (0, 0), fx=0.2, fy=0.2)
        photos.append(torch.from_numpy(np.ascontiguousarray(small[..., ::-1])).permute(2, 0, 1))
    return tuple(photos)


def frost(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """c0 x + c1 frost, a random H x W crop of one of five frost photos."""
    image_weight, frost_weight = FROST[severity - 1]
    photos = frost_photos()
    b, _, h, w = x.shape
    which = torch.randint(len(photos), (b,), generator=g)
    corner = torch.rand(b, 2, generator=g, dtype=torch.float64)
    layers = []
    for k, u in zip(which.tolist(), corner):
        photo = photos[k]
        top, left = int(u[0] * (photo.shape[1] - h)), int(u[1] * (photo.shape[2] - w))
        layers.append(photo[:, top:top + h, left:left + w])
    layer = torch.stack(layers).to(x) / 255
    return (image_weight * x + frost_weight * layer).clamp(0, 1)


def plasma_fractal(n: int, size: int, decay: float, g: torch.Generator) -> torch.Tensor:
    """(n, size, size) diamond-square height maps in [0, 1] (size a power of two), batched: each
    midpoint is the mean of its 4 neighbours (wrapping around) + wibble * U(-wibble, wibble); wibble
    starts at 100 and is divided by ``decay`` at each halving of the step."""
    maps = torch.zeros(n, size, size, dtype=torch.float64)
    step, wibble = size, 100.0

    def wibbled_mean(total):
        return total / 4 + wibble * (torch.rand(total.shape, generator=g, dtype=torch.float64) * 2 - 1) * wibble

    while step >= 2:
        half = step // 2
        corners = maps[:, ::step, ::step]
        squares = corners + corners.roll(-1, 1)
        squares = squares + squares.roll(-1, 2)
        maps[:, half::step, half::step] = wibbled_mean(squares)
        centres, corners = maps[:, half::step, half::step], maps[:, ::step, ::step]
        maps[:, ::step, half::step] = wibbled_mean((centres + centres.roll(1, 1)) + (corners + corners.roll(-1, 2)))
        maps[:, half::step, ::step] = wibbled_mean((centres + centres.roll(1, 2)) + (corners + corners.roll(-1, 1)))
        step //= 2
        wibble /= decay
    maps -= maps.amin((1, 2), keepdim=True)
    return maps / maps.amax((1, 2), keepdim=True)


def fog(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Add strength * a plasma fractal, rescale by max / (max + strength)."""
    strength, decay = FOG[severity - 1]
    b, _, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()  # the next power of two: 32 for CIFAR
    plasma = plasma_fractal(b, size, decay, g)[:, None, :h, :w].to(x)
    top = x.amax((1, 2, 3), keepdim=True)
    return ((x + strength * plasma) * top / (top + strength)).clamp(0, 1)


def _water_shading(liquid: np.ndarray) -> np.ndarray:
    """The script's OpenCV pipeline for one uint8 liquid layer: distance to its Canny edges,
    truncated at 20, box-blurred, histogram-equalised, embossed, box-blurred again."""
    cv2 = _cv2()
    dist = cv2.distanceTransform(255 - cv2.Canny(liquid, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    emboss = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
    return cv2.blur(cv2.filter2D(dist, cv2.CV_8U, emboss), (3, 3)).astype(np.float32)


def spatter(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """Water drops (severities 1-3) or mud (4-5) shaped by a blurred, thresholded Gaussian layer.

    The script's uint8 cast of the water layer wraps values above 1 modulo 256 (numpy on x86; a third
    of the images at severity 3): reproduced. An image with no water edges gets no water, where the
    script divides 0 by 0."""
    loc, scale, sigma, threshold, intensity, mode = SPATTER[severity - 1]
    b, _, h, w = x.shape
    liquid = loc + scale * torch.randn(b, h, w, generator=g, dtype=torch.float64)
    liquid = filters.gaussian(liquid, sigma)
    liquid = torch.where(liquid < threshold, torch.zeros_like(liquid), liquid)
    if mode == 0:
        layer = (torch.floor(liquid * 255).long() % 256).to(torch.uint8).numpy()  # numpy's uint8 cast
        m = torch.from_numpy(np.stack([lay * _water_shading(lay) for lay in layer])).double()
        top = m.amax((1, 2), keepdim=True)
        m = torch.where(top > 0, m / top.clamp_min(1e-12), torch.zeros_like(m)) * intensity
        color = torch.tensor(WATER, dtype=torch.float64)[None, :, None, None]
        return (x + (m[:, None] * color).to(x)).clamp(0, 1)
    m = filters.gaussian((liquid > threshold).double(), intensity)
    m = torch.where(m < 0.8, torch.zeros_like(m), m)[:, None].to(x)
    color = torch.tensor(MUD)[None, :, None, None].to(x)
    return (x * (1 - m) + color * m).clamp(0, 1)
