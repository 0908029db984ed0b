"""Paired comparison of two models on the same images (the gains here are one to three points)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class PairedDifference:
    """Accuracy of B minus accuracy of A on the same images, with a 95% confidence interval."""

    difference: float
    low: float
    high: float
    b_only: int  # images B gets right and A wrong
    a_only: int  # images A gets right and B wrong
    n: int

    @property
    def significant(self) -> bool:
        """False when the interval contains 0: the difference is within noise."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        verdict = "" if self.significant else " (within noise)"
        return (f"{100 * self.difference:+.2f} points, 95% CI [{100 * self.low:+.2f}, {100 * self.high:+.2f}]"
                f"{verdict}; {self.b_only} images gained, {self.a_only} lost, n={self.n}")


def paired_difference(a: torch.Tensor, b: torch.Tensor, z: float = 1.959964) -> PairedDifference:
    """Paired (per-image) difference of two bool correctness vectors, Wald interval on d_i = b_i - a_i."""
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D vectors over the same images, got {tuple(a.shape)} and {tuple(b.shape)}")
    d = b.double() - a.double()
    n = len(d)
    mean = d.mean().item()
    se = math.sqrt(max(d.var(unbiased=True).item(), 0.0) / n) if n > 1 else math.inf
    return PairedDifference(mean, mean - z * se, mean + z * se, int((d > 0).sum()), int((d < 0).sum()), n)
