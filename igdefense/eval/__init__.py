"""Honest robustness evaluation: the attacks of :mod:`igdefense.attacks` by name, per-image results with the image-wise worst case, resumable and torchrun-sharded runs, sanity checks against
gradient masking, paired intervals and reports.

    from igdefense.eval import evaluate, AttackSettings
    result = evaluate(defended, loader, attacks=["autoattack", "apgd-ce-eot", "transfer"],
                      settings=AttackSettings(eps=8 / 255, base_model=model))

A :class:`Plan` holds what runs (attacks, settings, cascade, corruptions) for :func:`evaluate_plan`,
:func:`benchmark` (several models) and :func:`sweep` (a grid of defense settings).
"""

from ..attacks import AttackSettings
from .benchmark import benchmark
from .evaluate import EvalResult, evaluate, evaluate_plan
from .plan import Plan
from .sanity import Check, run_sanity_checks
from .sweep import DefenseSetting, SweepResult, adversarial_probe, one_at_a_time, sweep

__all__ = ["AttackSettings", "benchmark", "EvalResult", "evaluate", "evaluate_plan", "Plan",
           "Check", "run_sanity_checks", "sweep",
           "DefenseSetting", "SweepResult", "one_at_a_time", "adversarial_probe"]
