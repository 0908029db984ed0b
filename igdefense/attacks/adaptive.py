"""IG-Defense's own adaptive attack: aimed at its mechanism, not through it (Tramèr et al. 2020).

The defended model answers class t when pass 1 (the model on noisy copies) picks t and pass 2 (the
model with its features masked to t's important neurons) then says t. The soft mask's softmax at
tau = 0.01 saturates, so gradients through the whole defense all but vanish; with the mask fixed
to a class, both passes are differentiable. For each of the top wrong classes t this maximises

    - CE(pass 2 under t's mask, t) - mean over noise draws of CE(pass 1, t)

(pass 1 averaged over the defense's own noise distribution, EOT), and for the true class y it
maximises CE(pass 2 under y's mask, y) (pass 1 stays at y, pass 2 is fooled). Each run starts from
the clean image and, for the wrong classes, from the base model's APGD-CE example (the transfer
example, when ``settings.base_model`` is set), and uses APGD's step-size control (Croce & Hein
2020) inside the eps-ball. Per image the candidate the defended model itself gets right under the
fewest of ``settings.draws`` draws is returned; the evaluation then scores it under fresh draws.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from torch import nn

from ..defense import IGDefense
from .registry import register_attack
from .run import run_attack
from .settings import AttackSettings


def mask_aware_attack(defense: IGDefense, x: torch.Tensor, y: torch.Tensor, settings,
                      transfer_start: torch.Tensor | None = None) -> list[torch.Tensor]:
    """The adaptive attack on ``defense`` for the batch (x, y): one candidate per image (a list of one).
    ``transfer_start``: the base model's APGD-CE examples of x, a second start for the wrong classes."""
    if settings.norm != "Linf":
        raise ValueError("the mask-aware attack is an L-inf attack")
    gen = torch.Generator(x.device).manual_seed(settings.seed)
    with torch.no_grad():
        logits = defense.unmasked_logits(x)  # pass 1 without noise: which wrong classes are nearest
    wrong = logits.scatter(1, y[:, None], -torch.inf).topk(min(settings.adaptive_targets, logits.shape[1] - 1),
                                                            dim=1).indices
    starts = [x] if transfer_start is None else [x, transfer_start.detach()]
    steps = settings.adaptive_steps
    candidates = [apgd_maximize(_true_mask_loss(defense, y), x, x, settings.eps, steps)]
    for j in range(wrong.shape[1]):
        loss = _target_loss(defense, wrong[:, j], settings.adaptive_eot, gen)
        candidates += [apgd_maximize(loss, start, x, settings.eps, steps) for start in starts]
    return [_fewest_right(defense, candidates, y, settings.draws)]


def _true_mask_loss(defense: IGDefense, y: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    def loss(x: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(defense.masked_logits(x, y), y, reduction="none")
    return loss


def _target_loss(defense: IGDefense, t: torch.Tensor, eot: int, gen: torch.Generator
                 ) -> Callable[[torch.Tensor], torch.Tensor]:
    def loss(x: torch.Tensor) -> torch.Tensor:
        b = len(x)
        noise = torch.randn((eot, defense.n_samples, *x.shape), generator=gen, device=x.device) * defense.sigma
        noisy = (x.unsqueeze(0).unsqueeze(0) + noise).flatten(0, 2)
        pass1 = defense.unmasked_logits(noisy).reshape(eot, defense.n_samples, b, -1).mean(1)  # (as the defense: mean)
        pass1_loss = F.cross_entropy(pass1.flatten(0, 1), t.repeat(eot), reduction="none").reshape(eot, b).mean(0)
        return -F.cross_entropy(defense.masked_logits(x, t), t, reduction="none") - pass1_loss
    return loss


def _fewest_right(defense: IGDefense, candidates: list[torch.Tensor], y: torch.Tensor, draws: int) -> torch.Tensor:
    """Per image, the candidate the defended model is right on under the fewest of ``draws`` draws."""
    with torch.no_grad():
        rights = torch.stack([sum((defense(c).argmax(1) == y).long() for _ in range(draws)) for c in candidates])
    best = rights.argmin(0)
    stacked = torch.stack(candidates)
    return stacked[best, torch.arange(len(y), device=best.device)]


def apgd_maximize(loss_fn: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, x: torch.Tensor,
                  eps: float, steps: int) -> torch.Tensor:
    """Maximise a per-image ``loss_fn`` over the L-inf ``eps``-ball around ``x`` (and [0, 1]) from
    ``start``, with APGD's momentum and step-size control (halve the step and go back to the best
    point at a checkpoint where the loss rose in under 75% of the steps since the last one, or stalled);
    returns the point of highest loss per image."""
    def project(v: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.maximum(v, x - eps), x + eps).clamp(0, 1)

    def value_and_grad(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v = v.detach().requires_grad_(True)
        value = loss_fn(v)
        grad, = torch.autograd.grad(value.sum(), v)
        return value.detach(), grad.detach()

    shape = (-1,) + (1,) * (x.ndim - 1)
    eta = torch.full((len(x),), 2.0 * eps, device=x.device)
    current = project(start.detach())
    loss, grad = value_and_grad(current)
    best, best_loss = current.clone(), loss.clone()
    previous = current.clone()
    rises = torch.zeros(len(x), device=x.device)
    since, checked_loss = 0, best_loss.clone()
    reduced = torch.ones(len(x), dtype=torch.bool, device=x.device)
    checkpoints = _checkpoints(steps)
    for i in range(steps):
        z = project(current + eta.view(shape) * grad.sign())
        alpha = 1.0 if i == 0 else 0.75
        current, previous = project(current + alpha * (z - current) + (1 - alpha) * (current - previous)), current
        new_loss, grad = value_and_grad(current)
        rises += (new_loss > loss).float()
        loss = new_loss
        better = loss > best_loss
        best[better], best_loss[better] = current[better], loss[better]
        since += 1
        if i + 1 in checkpoints:
            reduce = (rises < 0.75 * since) | (~reduced & (checked_loss >= best_loss))
            eta[reduce] /= 2
            current[reduce] = best[reduce]
            reduced, rises, since, checked_loss = reduce, torch.zeros_like(rises), 0, best_loss.clone()
            if reduce.any():
                loss, grad = value_and_grad(current)
    return best.detach()


def _checkpoints(steps: int) -> set[int]:
    """APGD's checkpoints: fractions 0, 0.22, then each gap 0.03 shorter than the last (at least 0.06)."""
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return {math.ceil(v * steps) for v in p[1:] if v < 1}


def adaptive_attack_of(model: nn.Module) -> Callable | None:
    """The defense's own attack, ``(x, y, settings) -> [candidates]``: its method ``adaptive_attack``,
    else for an IGDefense the mask-aware attack above; None for other models."""
    own = getattr(model, "adaptive_attack", None)
    if callable(own):
        return own
    if not isinstance(model, IGDefense):
        return None

    def attack(x, y, s: AttackSettings) -> list[torch.Tensor]:
        start = None if s.base_model is None else run_attack("apgd-ce", s.base_model, x, y, s)[0]
        return mask_aware_attack(model, x, y, s, transfer_start=start)
    return attack


@register_attack("adaptive", "adaptive", budgets=("adaptive_steps", "adaptive_targets", "adaptive_eot"))
def _adaptive(model, x, y, s: AttackSettings):
    attack = adaptive_attack_of(model)
    if attack is None:
        raise ValueError(f"{type(model).__name__} names no adaptive attack of its own: a defense gives one as a method "
                         "adaptive_attack(x, y, settings) -> list of candidate batches (IGDefense has one)")
    return attack(x, y, s)
