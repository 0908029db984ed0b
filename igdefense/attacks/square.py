"""Square (Andriushchenko et al. 2020), from pyautoattack: a score-based black-box attack, 5,000
queries; gradient masking cannot fool it."""

from __future__ import annotations

from .registry import register_attack
from .settings import AttackSettings


@register_attack("square", "black-box", budgets=("square_queries",))
def _square(model, x, y, s: AttackSettings):
    from pyautoattack.square import SquareAttack

    atk = SquareAttack(model, p_init=0.8, n_queries=s.square_queries, eps=s.eps, norm=s.norm, n_restarts=1,
                       seed=s.seed, device=x.device, resc_schedule=False)
    return atk.perturb(x, y)
