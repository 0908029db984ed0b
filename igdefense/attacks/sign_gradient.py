"""FGSM, BIM and PGD: the classic sign-gradient L-inf attacks (Goodfellow et al. 2015; Kurakin et
al. 2017; Madry et al. 2018), which the refinement papers report, and the single steps adversarial
training makes its examples with: FGSM-RS (Wong et al. 2020) and N-FGSM (de Jorge et al. 2022).
Weaker than APGD; use them to compare with those papers, and AutoAttack / the image-wise worst case
for robustness claims.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import register_attack
from .settings import AttackSettings


def sign_gradient_attack(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, *, steps: int,
                         step_size: float, random_start: bool, seed: int = 0) -> torch.Tensor:
    """Iterated x <- clip(x + step_size * sign(grad CE), eps-ball, [0, 1]).

    FGSM is steps=1, step_size=eps, no random start; BIM no random start; PGD a uniform random
    start in the eps-ball. Returns the last iterate (B, C, H, W).
    """
    x = x.detach()
    adv = x.clone()
    if random_start:
        gen = torch.Generator(x.device).manual_seed(seed)
        adv = (x + (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * eps).clamp(0, 1)
    for _ in range(steps):
        adv.requires_grad_(True)
        with torch.enable_grad():
            grad, = torch.autograd.grad(F.cross_entropy(model(adv), y), adv)
        adv = torch.min(torch.max(adv.detach() + step_size * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return adv.detach()


def fgsm_from_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step_size: float,
                    generator: torch.Generator, *, noise: float | None = None, project: bool = True) -> torch.Tensor:
    """One FGSM step of ``step_size`` from a uniform start in [-noise, noise] (``noise`` None: eps),
    projected back into the eps-ball (FGSM-RS) or not (``project=False``: N-FGSM); the start drawn
    from ``generator`` on its own device (training's CPU generator serves any device)."""
    noise = eps if noise is None else noise
    delta = (torch.rand(x.shape, generator=generator, device=generator.device).to(x) * 2 - 1) * noise
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x + delta).float(), y), delta)
    delta = delta + step_size * grad.sign()
    if project:
        delta = delta.clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


def _sign_gradient(model, x, y, s: AttackSettings, name: str):
    if s.norm != "Linf":
        raise ValueError(f"{name} is an L-inf attack here; use apgd-ce for {s.norm}")
    if name == "fgsm":
        return sign_gradient_attack(model, x, y, s.eps, steps=1, step_size=s.eps, random_start=False)
    return sign_gradient_attack(model, x, y, s.eps, steps=s.pgd_steps, step_size=s.eps / 4,
                                random_start=name == "pgd", seed=s.seed)


register_attack("fgsm", "white-box")(lambda m, x, y, s: _sign_gradient(m, x, y, s, "fgsm"))
register_attack("bim", "white-box", budgets=("pgd_steps",))(lambda m, x, y, s: _sign_gradient(m, x, y, s, "bim"))
register_attack("pgd", "white-box", budgets=("pgd_steps",))(lambda m, x, y, s: _sign_gradient(m, x, y, s, "pgd"))
