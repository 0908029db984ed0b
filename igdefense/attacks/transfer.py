"""Transfer: examples crafted on the undefended base model (``AttackSettings.base_model``) by the
attacks ``AttackSettings.transfer_from`` names (the paper's: APGD-CE, APGD-CW, targeted APGD-DLR,
AutoAttack), handed to the defended model. Cached on the base model, so every defended model of a
sweep reuses them."""

from __future__ import annotations

from .registry import register_attack
from .run import run_attack
from .settings import AttackSettings


@register_attack("transfer", "transfer")
def _transfer(model, x, y, s: AttackSettings):
    if s.base_model is None:
        raise ValueError("the transfer attack needs base_model= (the undefended model)")
    if not s.transfer_from:
        raise ValueError("transfer_from must name attacks to craft on the base model")
    return [c for name in s.transfer_from for c in run_attack(name, s.base_model, x, y, s)]
