"""Noise corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019), CIFAR parameters.

Every function takes (B, 3, H, W) floats in [0, 1], a severity 1..5 and a torch.Generator, and
draws its randomness from that generator in the order written.
"""

from __future__ import annotations

import torch

GAUSSIAN = (0.04, 0.06, 0.08, 0.09, 0.10)  # std
SHOT = (500, 250, 100, 75, 50)  # photons per unit intensity
IMPULSE = (0.01, 0.02, 0.03, 0.05, 0.07)  # fraction of values set to 0 or 1
SPECKLE = (0.06, 0.10, 0.12, 0.16, 0.20)  # std of the multiplicative noise


def _normal(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.randn(x.shape, generator=g, dtype=torch.float64).to(x)


def gaussian_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    return (x + GAUSSIAN[severity - 1] * _normal(x, g)).clamp(0, 1)


def shot_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    c = SHOT[severity - 1]
    return (torch.poisson((x * c).double().cpu(), generator=g).to(x) / c).clamp(0, 1)


def impulse_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    """skimage's ``random_noise(mode='s&p')``: each value is flipped with probability ``amount``,
    to 1 or 0 with equal odds."""
    flipped = torch.rand(x.shape, generator=g, dtype=torch.float64).to(x.device) < IMPULSE[severity - 1]
    salted = torch.rand(x.shape, generator=g, dtype=torch.float64).to(x.device) < 0.5
    return torch.where(flipped, salted.to(x), x)


def speckle_noise(x: torch.Tensor, severity: int, g: torch.Generator) -> torch.Tensor:
    return (x + x * SPECKLE[severity - 1] * _normal(x, g)).clamp(0, 1)
