"""Spurious superpixels, by the refinement paper's three criteria (arXiv 2601.00968, Algorithm 1).

A superpixel j of image x is flagged if ANY of:

- irrelevance: the model's attribution |beta_j| is high and the reference model's is not;
- sensitivity: the model's input-gradient magnitude summed over j is high and the reference's is not;
- instability: beta_j varies much across perturbed copies of x.

The paper gives no thresholds. Scales differ across models and images, so "high" is relative to
the image: above the ``quantile``-th quantile of that image's own scores (ties at the quantile are
not high, so a constant map flags nothing). The default quantile, 0.8, comes from the sweep in
``benchmarks/refine_flags.py`` (30 training images, smallcnn-standard vs smallcnn-robust, quantiles
0.5/0.7/0.8/0.9): hiding the superpixels irrelevance flags at 0.8 drops the model's true-class
probability by 7.9 points (as many random superpixels: 3.1) and the reference's by 0.15, the best
separation of the four; at 0.9 instability stops separating (the reference drops as much).
Instability is measured with the same perturbation draws for every copy (common random numbers),
so LIME's own sampling noise does not count as instability.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..attribution import attribute
from ..attribution.methods import Method
from ..attribution.segments import segment_counts

CRITERIA = ("irrelevance", "sensitivity", "instability")


@dataclass
class Flags:
    """Per image and superpixel, which criterion flagged it; (B, N) bool each, False past a count."""

    irrelevance: torch.Tensor
    sensitivity: torch.Tensor
    instability: torch.Tensor

    @property
    def any(self) -> torch.Tensor:
        return self.irrelevance | self.sensitivity | self.instability

    def why(self, b: int) -> dict[int, list[str]]:
        """Explain-why view of image ``b``: {superpixel id: [criteria that flagged it]}."""
        return {j: [c for c in CRITERIA if getattr(self, c)[b, j]] for j in self.any[b].nonzero().flatten().tolist()}

    def counts(self) -> dict[str, int]:
        """Superpixels flagged by each criterion (and by any), over the batch."""
        return {**{c: int(getattr(self, c).sum()) for c in CRITERIA}, "any": int(self.any.sum())}


def high(scores: torch.Tensor, counts: torch.Tensor, quantile: float) -> torch.Tensor:
    """(B, N) bool: scores above the ``quantile``-th quantile of the image's own first counts[b] scores."""
    # torch.quantile's linear interpolation, for all images at once (a loop of per-image quantiles
    # is hundreds of small kernels per batch on a GPU): each row sorted with its padding last.
    n = counts.to(scores.device).long()[:, None]  # (B, 1)
    real = torch.arange(scores.shape[1], device=scores.device) < n
    s = scores.double()
    ordered = torch.where(real, s, torch.inf).sort(dim=1).values
    rank = (n - 1).double() * quantile
    below = rank.floor().long()
    threshold = torch.lerp(ordered.gather(1, below), ordered.gather(1, rank.ceil().long()), rank - below)
    threshold = threshold.masked_fill((s.isnan() & real).any(1, keepdim=True), torch.nan)  # as torch.quantile
    return real & (s > threshold)


def unsupported(scores: torch.Tensor, reference_scores: torch.Tensor, counts: torch.Tensor,
                quantile: float) -> torch.Tensor:
    """High for the model, not high for the reference (irrelevance and sensitivity)."""
    return high(scores, counts, quantile) & ~high(reference_scores, counts, quantile)


def flag_spurious(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, segments: torch.Tensor, *,
                  reference: nn.Module | None = None, method: Method = "lime", quantile: float = 0.8,
                  copies: int = 2, noise: float = 8 / 255, num_samples: int = 300, seed: int = 0,
                  batch_size: int = 250, criteria: tuple[str, ...] = CRITERIA) -> Flags:
    """Flag spurious superpixels of ``images`` for their ``labels``.

    Args:
        model: the model being refined (eval mode).
        images: (B, C, H, W) in [0, 1].
        labels: (B,) classes.
        segments: (B, H, W) superpixel ids 0..n-1.
        reference: a model whose attributions count as right (the paper: a well-trained ResNet-50;
            e.g. an adversarially trained model). None skips irrelevance and sensitivity.
        method: attribution for irrelevance and instability (see :data:`igdefense.attribution.METHODS`).
        quantile: per-image quantile above which a score is high (all three criteria).
        copies: perturbed copies for instability (0 skips it); each adds one attribution run.
        noise: the copies are x + uniform noise in [-noise, noise], clipped to [0, 1].
        num_samples: LIME / KernelSHAP perturbations per image (:func:`igdefense.attribution.attribute`).
        seed: their random draws.
        batch_size: images per attribution batch.
        criteria: the criteria to evaluate (the others stay all False), from :data:`CRITERIA`.
    """
    if not 0 <= quantile < 1:
        raise ValueError(f"quantile must be in [0, 1), got {quantile}")
    if not set(criteria) <= set(CRITERIA):
        raise ValueError(f"criteria must be among {CRITERIA}, got {criteria}")
    counts = segment_counts(segments.cpu().long())
    if reference is not None:
        check_same_classes(model, reference, images[:1])

    def scores(m: nn.Module, x: torch.Tensor, how: Method) -> torch.Tensor:
        return attribute(m, x, segments, labels, method=how, num_samples=num_samples, seed=seed,
                         batch_size=batch_size)

    none = torch.zeros(len(images), int(counts.max()) if len(counts) else 0, dtype=torch.bool, device=images.device)
    irrelevance = sensitivity = instability = none
    beta = scores(model, images, method) if {"irrelevance", "instability"} & set(criteria) else None
    if reference is not None and "irrelevance" in criteria:
        irrelevance = unsupported(beta.abs(), scores(reference, images, method).abs(), counts, quantile)
    if reference is not None and "sensitivity" in criteria:
        sensitivity = unsupported(scores(model, images, "saliency"), scores(reference, images, "saliency"),
                                  counts, quantile)
    if copies and "instability" in criteria:
        gen = torch.Generator("cpu").manual_seed(seed)  # same draws on any device
        betas = [beta] + [scores(model, (images + (torch.rand(images.shape, generator=gen) * 2 - 1)
                                         .to(images) * noise).clamp(0, 1), method) for _ in range(copies)]
        instability = high(torch.stack(betas).var(0), counts, quantile)
    return Flags(irrelevance, sensitivity, instability)


def check_same_classes(model: nn.Module, reference: nn.Module, probe: torch.Tensor) -> None:
    """Raise ValueError unless both models give the same number of classes on ``probe``."""
    from .._hooks import model_device

    with torch.no_grad():
        ours = model(probe.to(model_device(model))).shape[1]
        theirs = reference(probe.to(model_device(reference))).shape[1]
    if ours != theirs:
        raise ValueError(f"the reference model has {theirs} classes but the model has {ours}: a reference must "
                         "classify the same classes in the same order")
