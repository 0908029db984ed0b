"""Honest robustness evaluation: attacks by name (white-box, EOT, BPDA, black-box, transfer), per-image
results with the image-wise worst case, resumable and torchrun-sharded runs, sanity checks against
gradient masking, paired intervals and reports.

    from igdefense.eval import evaluate, AttackSettings
    result = evaluate(defended, loader, attacks=["autoattack", "apgd-ce-eot", "transfer"],
                      settings=AttackSettings(eps=8 / 255, base_model=model))
"""

from .attacks import ATTACKS, AttackSettings, run_attack
from .benchmark import benchmark
from .evaluate import EvalResult, evaluate
from .sanity import Check, run_sanity_checks
from .stats import PairedDifference, paired_difference, paired_mean_difference
from .sweep import DefenseSetting, SweepResult, adversarial_probe, one_at_a_time, sweep

__all__ = ["ATTACKS", "AttackSettings", "run_attack", "benchmark", "EvalResult", "evaluate", "Check",
           "run_sanity_checks", "PairedDifference", "paired_difference", "paired_mean_difference", "sweep",
           "DefenseSetting", "SweepResult", "one_at_a_time", "adversarial_probe"]
