"""RayS: a hard-label (decision-based) L-inf attack (Chen & Gu, KDD 2020, arXiv 2006.12792).

It searches over sign directions v in {-1, +1}^d for the one whose decision boundary along
x + t * v lies closest, flipping the signs of ever smaller blocks of coordinates and keeping a
flip when the boundary distance shrinks (checked with one query, then bisection). It only uses
the predicted label, so gradient masking cannot fool it. Batched: all images share the block
schedule; each keeps its own direction, distance and query count.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm


class RayS:
    """Untargeted RayS.

    Args:
        model: returns logits; only the argmax is used.
        eps: L-inf radius; an image stops early once its adversarial distance is <= eps.
        queries: query budget per image (the paper's evaluation: 10,000).
        progress: show a bar of the queries spent by the slowest unfinished image.
        tol: bisection tolerance on the L2-normalised ray length.
        lin_steps: initial linear search radius (in L-inf units of the sign vector).
    """

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], eps: float, queries: int = 10_000,
                 tol: float = 1e-3, lin_steps: int = 10, progress: bool = True):
        self.model, self.eps, self.queries, self.tol, self.lin_steps = model, eps, queries, tol, lin_steps
        self.progress = progress

    @torch.no_grad()
    def _fooled(self, x, y, v, d, active):
        """One query per active image: is x + d * v (clamped) misclassified? Counts the queries."""
        idx = active.nonzero().squeeze(1)
        out = torch.zeros_like(active)
        if len(idx):
            cand = (x[idx] + d[idx].view(-1, *[1] * (x.ndim - 1)) * v[idx]).clamp(0, 1)
            out[idx] = self.model(cand).argmax(1) != y[idx]
            self.used[idx] += 1
        return out

    @torch.no_grad()
    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial examples (B, C, H, W); images not fooled within eps are returned unchanged.
        ``self.distance`` holds each image's best L-inf distance found, ``self.used`` its queries."""
        b, dim = x.shape[0], x[0].numel()
        norm = math.sqrt(dim)  # L2 norm of a sign vector; distances below are along v / norm
        sgn = torch.ones_like(x)
        best = torch.full((b,), math.inf, device=x.device)
        self.used = torch.zeros(b, dtype=torch.long, device=x.device)
        level = block = 0
        bar = tqdm(total=self.queries, desc="RayS queries", unit="q", leave=False, disable=not self.progress)
        while True:
            active = (self.used < self.queries) & ~(best / norm <= self.eps)
            if not active.any():
                break
            bar.update(int(self.used[active].min()) - bar.n)
            n_blocks = 2 ** level
            size = math.ceil(dim / n_blocks)
            start, end = block * size, min(dim, (block + 1) * size)
            attempt = sgn.clone().view(b, dim)
            attempt[:, start:end] *= -1
            attempt = attempt.view_as(x)
            self._search(x, y, attempt, sgn, best, active, norm)
            block += 1
            if block == n_blocks or end == dim:
                level, block = level + 1, 0
                if size == 1:
                    level = 0  # finest blocks done: start over with coarse blocks
        bar.close()
        self.distance = best / norm
        fooled = self.distance <= self.eps
        unit = sgn / norm
        adv = (x + torch.where(torch.isfinite(best), best, 0).view(-1, *[1] * (x.ndim - 1)) * unit).clamp(0, 1)
        return torch.where(fooled.view(-1, *[1] * (x.ndim - 1)), adv, x)

    def _search(self, x, y, v, sgn, best, active, norm):
        """Bisection along direction ``v`` for images where it beats their current best; updates in place."""
        lo = torch.zeros_like(best)
        hi = best.clone()
        have = torch.isfinite(best)
        unit = v / norm
        # Images with a distance already: one query tells whether v is better at that distance.
        ok = self._fooled(x, y, unit, hi, active & have)
        # First directions: linear search along v for any boundary within lin_steps.
        fresh = active & ~have
        for step in range(1, self.lin_steps + 1):
            if not fresh.any():
                break
            d = torch.full_like(best, float(step))
            hit = self._fooled(x, y, v, d, fresh)
            hi = torch.where(hit, d * norm, hi)
            ok |= hit
            fresh &= ~hit
        searching = ok.clone()
        while searching.any():
            mid = (lo + hi) / 2
            hit = self._fooled(x, y, unit, mid, searching)
            hi = torch.where(searching & hit, mid, hi)
            lo = torch.where(searching & ~hit, mid, lo)
            searching &= (hi - lo) > self.tol
        better = ok & (hi < best)
        best.copy_(torch.where(better, hi, best))
        sgn.copy_(torch.where(better.view(-1, *[1] * (x.ndim - 1)), v, sgn))
