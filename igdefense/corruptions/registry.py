"""The corruptions by name: each a function (images, severity, generator) -> images, and `corrupt`."""

from __future__ import annotations

import numbers
from typing import Callable

import torch

from .._validation import check_images, check_number
from . import blur, digital, noise, weather

Corruption = Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]

CORRUPTIONS: dict[str, Corruption] = {  # the script's order: the first 15 are the main ones
    "gaussian_noise": noise.gaussian_noise, "shot_noise": noise.shot_noise, "impulse_noise": noise.impulse_noise,
    "defocus_blur": blur.defocus_blur, "glass_blur": blur.glass_blur, "motion_blur": blur.motion_blur,
    "zoom_blur": blur.zoom_blur, "snow": weather.snow, "frost": weather.frost, "fog": weather.fog,
    "brightness": digital.brightness, "contrast": digital.contrast, "elastic_transform": digital.elastic_transform,
    "pixelate": digital.pixelate, "jpeg_compression": digital.jpeg_compression,
    "speckle_noise": noise.speckle_noise, "gaussian_blur": blur.gaussian_blur, "spatter": weather.spatter,
    "saturate": digital.saturate,
}
NAMES: tuple[str, ...] = tuple(CORRUPTIONS)
MAIN: tuple[str, ...] = NAMES[:15]
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)


def check_name(name: str) -> str:
    """``name`` if it is a corruption's name, else a ValueError that lists them."""
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; choose one of: {', '.join(NAMES)}")
    return name


def named(text: str) -> tuple[str, ...]:
    """The corruptions ``text`` names: "all" (the 19), "main" (the 15 of CIFAR-10-C's benchmark) or names
    separated by commas (each checked)."""
    if text in ("all", "main"):
        return NAMES if text == "all" else MAIN
    return tuple(check_name(n) for n in text.split(",") if n)


def check_severity(severity: int) -> int:
    """``severity`` as an int 1..5 (numpy and 0-d tensor integers too), else ValueError."""
    if isinstance(severity, torch.Tensor) and severity.ndim == 0 and not severity.is_floating_point():
        severity = severity.item()
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) or int(severity) not in SEVERITIES:
        raise ValueError(f"severity must be an integer 1..5, got {severity!r}")
    return int(severity)


def corrupt(images: torch.Tensor, name: str, severity: int, *, seed: int | None = None) -> torch.Tensor:
    """Corrupt a batch the way CIFAR-10-C's script corrupts each image (CIFAR parameters).

    Args:
        images: (B, 3, H, W) float in [0, 1] (the parameters are CIFAR's: meant for 32 x 32).
        name: one of ``NAMES``.
        severity: 1..5.
        seed: the same seed and batch give the same output; None draws a fresh seed.

    Returns:
        (B, 3, H, W) in [0, 1], the dtype and device of ``images``.
    """
    check_images(images)
    if images.shape[1] != 3:
        raise ValueError(f"corruptions are defined for RGB images (B, 3, H, W), got {images.shape[1]} channels")
    fn = CORRUPTIONS[check_name(name)]
    severity = check_severity(severity)
    if seed is not None:
        check_number("seed", seed, integer=True, low=0)
    g = torch.Generator("cpu")  # randomness is drawn on the CPU: the same seed gives the same images on any device
    if seed is None:
        g.seed()
    else:
        g.manual_seed(seed)
    x = images.detach().to(torch.promote_types(images.dtype, torch.float32), copy=True)  # half: computed in float32
    with torch.no_grad():
        return fn(x, severity, g).clamp(0, 1).to(images.dtype)
