"""Square (Andriushchenko et al. 2020), from pyautoattack: a score-based black-box attack, 5,000
queries; gradient masking cannot fool it."""

from __future__ import annotations

import torch

from ..defense import RandomizedDefense
from .registry import register_attack
from .settings import AttackSettings


@register_attack("square", "black-box", budgets=("square_queries",), version=2)  # 2: every image, randomized
def _square(model, x, y, s: AttackSettings):
    from pyautoattack.square import SquareAttack

    atk = SquareAttack(model, p_init=0.8, n_queries=s.square_queries, eps=s.eps, norm=s.norm, n_restarts=1,
                       seed=s.seed, device=x.device, resc_schedule=False)
    if not isinstance(model, RandomizedDefense):
        return atk.perturb(x, y)
    # A randomized defense: perturb() skips each image one noisy forward gets wrong and keeps an example
    # only if one more draw is fooled by it; attack every image and keep each one's last example.
    atk.init_hyperparam(x)
    torch.random.manual_seed(s.seed)
    return atk.attack_single_run(x.detach().float(), y)[1]
