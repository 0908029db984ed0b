"""FGSM, BIM and PGD: the classic sign-gradient L-inf attacks (Goodfellow et al. 2015; Kurakin et
al. 2017; Madry et al. 2018), which the refinement papers report. Weaker than APGD; use them to
compare with those papers, and AutoAttack / the image-wise worst case for robustness claims.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
