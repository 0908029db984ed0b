"""Sanity checks that catch a robustness number inflated by gradient masking or a weak attack
(Carlini et al. 2019, "On Evaluating Adversarial Robustness"; Athalye et al. 2018)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .attacks import AttackSettings, run_attack

log = logging.getLogger(__name__)


@dataclass
class Check:
    name: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"[{'PASS' if self.passed else 'FAIL'}] {self.name}: {self.detail}"


def _accuracy(model, x, y, attack: str, settings: AttackSettings) -> float:
    ok = torch.ones(len(y), dtype=torch.bool)
    with torch.no_grad():
        ok &= (model(x).argmax(1) == y).cpu()
    for x_adv in run_attack(attack, model, x, y, settings):
        with torch.no_grad():
            ok &= (model(x_adv).argmax(1) == y).cpu()
    return ok.float().mean().item()


def accuracy_vs_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values=(8 / 255, 16 / 255, 32 / 255, 1.0),
                    attack: str = "apgd-ce", settings: AttackSettings | None = None) -> dict[float, float]:
    """Accuracy under ``attack`` at each radius (for the eps sweep and the robustness curve)."""
    base = settings or AttackSettings()
    return {e: _accuracy(model, x, y, attack, AttackSettings(**{**base.__dict__, "eps": e})) for e in eps_values}


def gradient_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Check:
    """The input gradient of the loss is finite and non-zero for every image."""
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    finite = torch.isfinite(grad).all().item()
    zero = int((grad.flatten(1).abs().amax(1) == 0).sum())
    return Check("gradients", finite and zero == 0, f"finite={finite}, images with an all-zero gradient: {zero}/{len(x)}")


def run_sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str = "apgd-ce",
                      eps: float = 8 / 255, settings: AttackSettings | None = None,
                      black_box: str = "square", tolerance: float = 0.03,
                      sweep: dict[float, float] | None = None) -> list[Check]:
    """Run the checks on one batch; failures are logged as warnings.

    - eps sweep: accuracy must not rise with eps, and must be ~0 (<= ``tolerance``) for an
      unbounded attack (eps = 1 covers the whole image box) and small at 32/255;
    - more steps (10 -> 100) must not raise accuracy beyond ``tolerance``;
    - the white-box attack must not be weaker than ``black_box`` beyond ``tolerance``;
    - gradients are finite and non-zero.

    ``sweep``: an :func:`accuracy_vs_eps` result for these images and ``attack``, including ``eps``
    and 1.0 (computed when None).
    """
    base = settings or AttackSettings(eps=eps)
    checks = [gradient_check(model, x, y)]
    if sweep is None or not {eps, 1.0} <= set(sweep):
        sweep = accuracy_vs_eps(model, x, y, (eps, 16 / 255, 32 / 255, 1.0), attack, base)
    accs = list(sweep.values())
    monotone = all(b <= a + tolerance for a, b in zip(accs, accs[1:]))
    text = ", ".join(f"{e * 255:.0f}/255: {100 * a:.1f}%" for e, a in sweep.items())
    checks.append(Check("eps sweep", monotone and sweep[1.0] <= tolerance, text))
    few = _accuracy(model, x, y, attack, AttackSettings(**{**base.__dict__, "eps": eps, "n_iter": 10}))
    many = sweep[eps]
    checks.append(Check("more steps", many <= few + tolerance, f"10 steps {100 * few:.1f}%, 100 steps {100 * many:.1f}%"))
    bb = _accuracy(model, x, y, black_box, AttackSettings(**{**base.__dict__, "eps": eps}))
    checks.append(Check("white-box vs black-box", many <= bb + tolerance,
                        f"{attack} {100 * many:.1f}%, {black_box} {100 * bb:.1f}%"))
    for c in checks:
        if not c.passed:
            log.warning("SANITY CHECK FAILED: %s", c)
    return checks
