"""The budgets and options of every attack, one dataclass: the defaults are the standard ones
(AutoAttack's own budgets included)."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import torch
from torch import nn

from .._validation import check_number
from ..precision import check_precision, compute_dtype, precision_name
from . import registry
from .registry import attack_names

TRANSFER_SOURCES = ("apgd-ce", "apgd-cw", "apgd-t", "autoattack")  # the paper's transfer attacks (RayS aside)


def budget_fields() -> tuple[str, ...]:
    """The :class:`AttackSettings` fields some registered attack reads as its budget, in field order."""
    named = {b for a in registry._ATTACKS.values() for b in a.budgets}
    return tuple(f.name for f in fields(AttackSettings) if f.name in named)


@dataclass
class AttackSettings:
    """Budgets and options of every attack. The defaults are the standard ones (AutoAttack's own
    budgets included); smaller budgets are for quick tests, never for reported numbers."""

    eps: float = 8 / 255  # the attacks' radius (L-inf: in [0, 1] units)
    norm: str = "Linf"
    seed: int = 0
    eot_iter: int = 20  # noise draws per gradient in the *-eot attacks and autoattack-rand (the paper: 20)
    # Odd, so that a majority is never a tie (igdefense.eval.scoring); 9 puts an image right with
    # probability 0.7 per draw on the majority side with probability 0.90 (0.84 with 5, 0.95 with 15).
    draws: int = 9  # noise draws each example of a randomized defense is classified under; an image counts when right in more than half (1: one draw, as single-draw evaluations)
    n_iter: int = 100  # APGD steps, in AutoAttack too (its APGD, APGD-T and FAB)
    square_queries: int = 5_000  # Square, in AutoAttack too
    rays_queries: int = 10_000
    pgd_steps: int = 10  # BIM and PGD steps of eps / 4 (the refinement papers do not state theirs)
    # ``adaptive``, a defense's own attack (IGDefense: igdefense.attacks.adaptive): steps per run, wrong
    # classes targeted, noise draws per pass-1 gradient
    adaptive_steps: int = 50
    adaptive_targets: int = 2
    adaptive_eot: int = 5
    base_model: nn.Module | None = None  # source of transfer attacks
    transfer_from: tuple[str, ...] = TRANSFER_SOURCES  # attacks crafted on base_model by "transfer"
    cache: Path | None = None  # directory memoizing examples crafted on deterministic models
    # The evaluation re-classifies, checks and scores every candidate in the model's own precision.
    # float32 until benchmarks/precision_strength.py shows bfloat16 crafting as strong on a model.
    precision: str = "fp32"  # craft the attacks' examples in float32 (fp32) or under bfloat16 autocast (bf16); auto: bf16 on a GPU and on a CPU where it is measured faster; every example is judged in float32

    def __post_init__(self) -> None:
        if self.norm not in ("Linf", "L2", "L1"):
            raise ValueError(f"norm must be 'Linf', 'L2' or 'L1', got {self.norm!r}")
        check_number("eps", self.eps, low=0)  # (0: no perturbation, a control)
        if self.norm == "Linf" and self.eps > 1:
            raise ValueError(f"eps={self.eps:g} is larger than the whole [0, 1] range of an image: an L-inf eps is "
                             f"in [0, 1] units (8/255 = {8 / 255:.4f}); did you mean {self.eps:g}/255?")
        check_number("seed", self.seed, integer=True, low=0)
        for name in ("eot_iter", "draws", *budget_fields()):
            check_number(name, getattr(self, name), integer=True, low=1)
        if self.base_model is not None and not isinstance(self.base_model, nn.Module):
            raise TypeError(f"base_model must be the undefended model (an nn.Module), got "
                            f"{type(self.base_model).__name__}")
        self.transfer_from = tuple(self.transfer_from)
        sources = attack_names("white-box") + attack_names("black-box")
        if unknown := [a for a in self.transfer_from if a not in sources]:
            raise ValueError(f"transfer_from names {unknown}: attacks crafted on base_model, from {sources} "
                             f"(default {list(TRANSFER_SOURCES)})")
        self.cache = Path(self.cache) if self.cache is not None else None
        check_precision(self.precision)

    def crafting_precision(self, device: torch.device) -> str:
        """``"fp32"`` or ``"bf16"``: what the attacks craft in on ``device``."""
        return precision_name(compute_dtype(self.precision, device))
