"""Paired comparison of two models on the same images (the gains here are one to three points)."""

from __future__ import annotations

import math
import dataclasses
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
    """Paired (per-image) difference of two bool correctness vectors, accuracy of ``b`` minus ``a``.

    The interval is Agresti & Min's (Statistics in Medicine 2005): the Wald interval of the matched
    2x2 table with 0.5 added to each cell. The plain Wald interval collapses to [0, 0] when no image
    differs (and is too narrow when few do), claiming a certainty that 200 images cannot give.
    """
    _check_pair(a, b)
    n = len(a)
    b_only, a_only = int((b & ~a).sum()), int((a & ~b).sum())
    if n == 0:
        return PairedDifference(0.0, -math.inf, math.inf, 0, 0, 0)
    m = n + 2  # four cells, 0.5 each
    gain, loss = (b_only + 0.5) / m, (a_only + 0.5) / m
    centre = gain - loss
    se = math.sqrt(max(gain + loss - centre ** 2, 0.0) / m)
    return PairedDifference((b_only - a_only) / n, centre - z * se, centre + z * se, b_only, a_only, n)


def paired_row(after: str, a_name: str, a: torch.Tensor, b_name: str, b: torch.Tensor) -> dict:
    """A results table's row: the accuracy of ``a`` and ``b`` (per-image bools, the same images) and
    b - a, paired, with its 95% interval ("gained": right only for b; "lost": only for a)."""
    d = paired_difference(a, b)
    return {"after": after, a_name: f"{100 * a.float().mean():.1f}", b_name: f"{100 * b.float().mean():.1f}",
            "gained": d.b_only, "lost": d.a_only,
            "difference": f"{100 * d.difference:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]",
            "paired": dataclasses.asdict(d)}


def paired_mean_difference(a: torch.Tensor, b: torch.Tensor, z: float = 1.959964) -> PairedDifference:
    """Paired difference of two per-image scores (e.g. the fraction of an image's corrupted
    versions a model gets right, or a map-similarity metric), mean of ``b`` minus ``a``, with the normal interval of
    the mean per-image difference: the versions of one image are not independent, the images are.
    (When no image changes at all, the interval is [0, 0]: meant for thousands of images.)"""
    _check_pair(a, b)
    d = (b.double() - a.double())
    n = len(d)
    if n < 2:
        return PairedDifference(d.sum().item(), -math.inf, math.inf, int((d > 0).sum()), int((d < 0).sum()), n)
    mean, se = d.mean().item(), d.std().item() / math.sqrt(n)
    return PairedDifference(mean, mean - z * se, mean + z * se, int((d > 0).sum()), int((d < 0).sum()), n)


def _check_pair(a: torch.Tensor, b: torch.Tensor) -> None:
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two 1-D vectors over the same images, got {tuple(a.shape)} and {tuple(b.shape)}")
