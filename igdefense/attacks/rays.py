"""RayS: a hard-label (decision-based) L-inf attack (Chen & Gu, KDD 2020, arXiv 2006.12792).

It searches over sign directions v in {-1, +1}^d for the one whose decision boundary along
x + t * v lies closest, flipping the signs of ever smaller blocks of coordinates and keeping a
flip when the boundary distance shrinks (checked with one query, then bisection). It only uses
the predicted label, so gradient masking cannot fool it. Batched: each image runs the algorithm on
its own (its own block schedule, direction, distance, query count and step), and one model call asks
one query of every unfinished image (``benchmarks/rays_calls.py``: 5.3x fewer calls than when images
waited for each other's bisections, the same queries per image).
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from tqdm.auto import tqdm

from .registry import register_attack
from .settings import AttackSettings


START, CHECK, LINE, BISECT = 0, 1, 2, 3  # what an image's next query is for (see RayS.perturb)


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
        if not (lin_steps >= 1 and tol > 0):  # (else a search never ends)
            raise ValueError(f"RayS needs lin_steps >= 1 and tol > 0, got lin_steps={lin_steps}, tol={tol}")
        self.model, self.eps, self.queries, self.tol, self.lin_steps = model, eps, queries, tol, lin_steps
        self.progress = progress

    @torch.no_grad()
    def perturb(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Adversarial examples (B, C, H, W); images not fooled within eps are returned unchanged.
        ``self.distance`` holds each image's best L-inf distance found, ``self.used`` its queries.

        Each image runs the sequential algorithm on its own (the same queries as a run on it alone),
        and every model call asks one query of every unfinished image, whatever step it is at: a
        direction's first query, the linear search or the bisection. So a call is as large as it can
        be, and there are about as many calls as queries per image (GPUs are bound by the calls)."""
        b, dim = x.shape[0], x[0].numel()
        norm = math.sqrt(dim)  # L2 norm of a sign vector; distances below are along v / norm
        shape = (-1, *[1] * (x.ndim - 1))
        sgn = torch.ones_like(x)  # each image's best direction
        v = torch.ones_like(x)  # the direction each image is trying
        best = torch.full((b,), math.inf, device=x.device)
        lo, hi = torch.zeros_like(best), torch.zeros_like(best)
        step = torch.zeros(b, dtype=torch.long, device=x.device)  # the linear search's step
        self.used = torch.zeros(b, dtype=torch.long, device=x.device)
        phase = torch.full((b,), START, dtype=torch.long, device=x.device)
        level = torch.zeros(b, dtype=torch.long, device=x.device)  # the block schedule, per image
        block = torch.zeros_like(level)
        coords = torch.arange(dim, device=x.device)
        bar = tqdm(total=self.queries, desc="RayS queries", unit="q", leave=False, disable=not self.progress)
        while True:
            # Images between directions: stop (budget spent, or within eps), or take the next block flip.
            starting = phase == START
            phase[starting & ((self.used >= self.queries) | (best / norm <= self.eps))] = -1  # finished
            starting &= phase == START
            if starting.any():
                n_blocks = 2 ** level
                size = (dim + n_blocks - 1) // n_blocks  # (B,): the block size at each image's level
                first, end = block * size, torch.clamp((block + 1) * size, max=dim)
                flip = (coords >= first[:, None]) & (coords < end[:, None])
                attempt = torch.where(flip, -1.0, 1.0).to(x.dtype).view_as(x) * sgn
                v = torch.where(starting.view(shape), attempt, v)
                # the schedule moves on (as the sequential algorithm does after this direction's search)
                block = torch.where(starting, block + 1, block)
                wrap = starting & ((block == n_blocks) | (end == dim))
                level = torch.where(wrap, torch.where(size == 1, 0, level + 1), level)
                block = torch.where(wrap, 0, block)
                have = torch.isfinite(best)
                phase = torch.where(starting & have, CHECK, torch.where(starting, LINE, phase))
                lo = torch.where(starting, 0.0, lo)
                hi = torch.where(starting, best, hi)
                step = torch.where(starting & ~have, 1, step)
            asking = phase > START
            if not asking.any():
                break
            bar.update(int(self.used[asking].min()) - bar.n)
            # One query per unfinished image: along v at distance step (linear search), else along
            # v / norm at its best distance (a direction's check) or the bisection's midpoint.
            mid = (lo + hi) / 2
            d = torch.where(phase == CHECK, hi, mid)
            unit_point = x + d.view(shape) * (v / norm)
            line_point = x + step.to(x.dtype).view(shape) * v
            point = torch.where((phase == LINE).view(shape), line_point, unit_point).clamp(0, 1)
            idx = asking.nonzero().squeeze(1)
            hit = torch.zeros_like(asking)
            hit[idx] = self.model(point[idx]).argmax(1) != y[idx]
            self.used[idx] += 1
            # What each answer means for the image's search.
            check, line, bisect = asking & (phase == CHECK), asking & (phase == LINE), asking & (phase == BISECT)
            hi = torch.where(line & hit, step.to(hi.dtype) * norm, hi)
            hi = torch.where(bisect & hit, mid, hi)
            lo = torch.where(bisect & ~hit, mid, lo)
            step = torch.where(line & ~hit, step + 1, step)
            searching = (check & hit) | (line & hit) | (bisect & ((hi - lo) > self.tol))
            done = (check & ~hit) | (line & ~hit & (step > self.lin_steps)) | (bisect & ~searching)
            # A finished search keeps the direction if its boundary is closer than the best so far.
            better = done & bisect & (hi < best)
            best = torch.where(better, hi, best)
            sgn = torch.where(better.view(shape), v, sgn)
            phase = torch.where(searching, BISECT, torch.where(done, START, phase))
        bar.close()
        self.distance = best / norm
        fooled = self.distance <= self.eps
        adv = (x + torch.where(torch.isfinite(best), best, 0).view(shape) * (sgn / norm)).clamp(0, 1)
        return torch.where(fooled.view(shape), adv, x)


@register_attack("rays", "black-box", budgets=("rays_queries",))
def _rays(model, x, y, s: AttackSettings):
    if s.norm != "Linf":
        raise ValueError("RayS is an L-inf attack")
    return RayS(model, s.eps, queries=s.rays_queries).perturb(x, y)
