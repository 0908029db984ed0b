"""Attacks by name, below every job that runs them (evaluation, sanity checks, sweeps, explanation
robustness, refinement, training):

    from igdefense.attacks import AttackSettings, run_attack
    candidates = run_attack("apgd-ce", model, x, y, AttackSettings(eps=8 / 255))

White-box: ``apgd-ce``, ``apgd-dlr``, ``apgd-cw``, ``apgd-t``, ``apgd-ce-eot``, ``apgd-dlr-eot``,
``apgd-ce-bpda``, ``autoattack``, ``autoattack-rand`` (:mod:`.apgd`); ``fgsm``, ``bim``, ``pgd``
(:mod:`.sign_gradient`). Adaptive: ``adaptive``, the defense's own attack (an IGDefense's:
:mod:`.adaptive`). Black-box: ``square`` (:mod:`.square`), ``rays`` (:mod:`.rays`). Transfer:
``transfer`` (:mod:`.transfer`). A new attack is one module with one :func:`register_attack`.
"""

from .registry import KINDS, Attack, attack_names, attack_versions, get_attack, register_attack
from .settings import TRANSFER_SOURCES, AttackSettings, budget_fields
from .run import attack_library_version, check_in_ball, run_attack
# The attacks, registered on import (this order is the order of attack_names()):
from . import apgd, sign_gradient, adaptive, square, rays, transfer  # noqa: E402,F401
from .adaptive import adaptive_attack_of, mask_aware_attack
from .rays import RayS
from .sign_gradient import fgsm_from_noise, sign_gradient_attack

ATTACKS = attack_names()  # the attacks igdefense ships (attack_names() also lists those registered since)

__all__ = ["Attack", "KINDS", "register_attack", "get_attack", "attack_names", "attack_versions", "ATTACKS",
           "AttackSettings", "TRANSFER_SOURCES", "budget_fields", "run_attack", "check_in_ball", "attack_library_version",
           "adaptive_attack_of", "mask_aware_attack", "RayS", "sign_gradient_attack", "fgsm_from_noise"]
