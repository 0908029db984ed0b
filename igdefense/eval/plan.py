"""What an evaluation runs, as one object: the attacks and their order, their settings, the
cascade, the corruptions. :func:`~igdefense.eval.evaluate` runs a plan on one model,
:func:`~igdefense.eval.benchmark` on several, :func:`~igdefense.eval.sweep` on a grid of defenses;
each passes the same plan down, and a log's header is written from it.

    plan = Plan(["transfer", "autoattack", "rays"], AttackSettings(eps=8 / 255), cascade=True)
    results = benchmark({"base": model, "defended": defended}, loader, plan, out="eval-out")
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from torch import nn

from .._hooks import model_device
from .._identity import FIX, RESULTS_VERSION, StateMismatch, model_identity
from ..corruptions import SEVERITIES
from ..defense import RandomizedDefense
from . import log as runlog
from ..attacks import (AttackSettings, adaptive_attack_of, attack_library_version, attack_versions, budget_fields,
                       get_attack)

MODEL_FREE = ("transfer",)  # attacks whose examples do not depend on the model evaluated


@dataclass(frozen=True)
class Plan:
    """The attacks an evaluation runs and how.

    Attributes:
        attacks: names from :func:`igdefense.attacks.attack_names`.
        settings: eps, norm, seed and every attack's budget (steps, queries, EOT draws, scoring
            draws), the ``base_model`` that ``transfer`` crafts on and the attacks it crafts
            (``transfer_from``), the ``cache`` directory; default: L-inf 8/255, AutoAttack's budgets.
        cascade: attack only the images no earlier attack has broken (the image-wise worst case is
            the same, at a fraction of the cost). Attacks whose examples do not depend on the model
            (``transfer``: the base model's examples, on disk after its own run) go first and see the
            whole batch; the others follow in the order given. The first attack run reports its own
            accuracy, each later one a cumulative one (right under it and every attack before it).
        corruptions: names from :data:`igdefense.corruptions.NAMES` (CIFAR-10-C-style): accuracy on
            each clean image corrupted at each of ``severities``, under the keys "name@severity".
    """

    attacks: Sequence[str] = ("apgd-ce",)
    settings: AttackSettings = field(default_factory=AttackSettings)
    cascade: bool = False
    corruptions: Sequence[str] = ()
    severities: Sequence[int] = SEVERITIES

    def __post_init__(self) -> None:
        if isinstance(self.attacks, str):
            raise TypeError(f"attacks must be a list of names, e.g. [{self.attacks!r}], not a string")
        if self.settings is not None and not isinstance(self.settings, AttackSettings):
            raise TypeError(f"settings must be an AttackSettings (e.g. AttackSettings(eps=8 / 255)), got "
                            f"{type(self.settings).__name__}")
        if not isinstance(self.cascade, bool):
            raise TypeError(f"cascade must be True or False, got {self.cascade!r}")
        for i, name in enumerate(self.attacks):
            get_attack(name)  # (unknown: a one-line error naming the choices)
            if name in self.attacks[:i]:
                raise ValueError(f"attack {name!r} is named twice; name each attack once")
        for name in ("attacks", "corruptions", "severities"):  # frozen: tuples, so a plan cannot change under a run
            object.__setattr__(self, name, tuple(getattr(self, name)))
        object.__setattr__(self, "settings", self.settings or AttackSettings())

    @property
    def corruption_keys(self) -> list[str]:
        """The result keys of the corruptions, e.g. "fog@3", each name and severity checked."""
        if not self.corruptions:
            return []
        from ..corruptions import check_name, check_severity

        return [corruption_key(check_name(c), check_severity(s)) for c in self.corruptions for s in self.severities]

    def replace(self, **changes) -> "Plan":
        return dataclasses.replace(self, **changes)

    def with_base(self, base_model: nn.Module) -> "Plan":
        """This plan with ``base_model`` as the transfer source where none is set."""
        if self.settings.base_model is not None:
            return self
        return self.replace(settings=dataclasses.replace(self.settings, base_model=base_model))

    def for_model(self, model: nn.Module) -> "Plan":
        """The attacks that can add something on ``model``: a deterministic model skips the EOT
        attacks, the transfer source skips ``transfer``, ``adaptive`` runs where the model names one."""
        return self.replace(attacks=[a for a in self.attacks if not self._adds_nothing(a, model)])

    def _adds_nothing(self, attack: str, model: nn.Module) -> bool:
        if attack == "adaptive":
            return adaptive_attack_of(model) is None
        if isinstance(model, RandomizedDefense):
            return False
        return attack.endswith("-eot") or (attack == "transfer" and model is self.settings.base_model)

    def order(self, log_path: str | Path | None = None) -> list[str]:
        """The order the attacks run in: those the log at ``log_path`` already ran, in its order, then
        the others (a cascade's model-free ones first), so that an attack added to a finished
        evaluation runs last, on the images still standing."""
        fresh = run_order(self.attacks) if self.cascade else list(self.attacks)
        logged = runlog.logged_order(Path(log_path)) if log_path else None
        if not logged:
            return fresh
        gone = [a for a in logged if a not in self.attacks]
        if gone:
            # (the header's order is the evaluation's, so after until= it may name one that has not run yet)
            raise StateMismatch(f"{log_path} is an evaluation with {gone} in its attack order, which the attacks "
                                f"given no longer name (later results depend on every attack before them): name "
                                f"them again, or {FIX}")
        return list(logged) + [a for a in fresh if a not in logged]

    def header(self, model: nn.Module, order: Sequence[str]) -> dict:
        """A log's first line: everything its per-image results depend on besides the images (each
        record carries their digest): the attacks in the order they run (an attack added later
        extends it), the attack settings, the model's identity (weights; a defense's settings and
        rankings), the transfer source's, the results' and the attack library's versions, and the
        precision the attacks craft in where it is not float32."""
        s = self.settings
        header = {"settings": {"order": list(order), "cascade": self.cascade,
                               "eps": s.eps, "norm": s.norm, "seed": s.seed,
                               "eot_iter": s.eot_iter, "budgets": {k: getattr(s, k) for k in budget_fields()},
                               "draws": s.draws if isinstance(model, RandomizedDefense) else 1,
                               "corruptions": self.corruption_keys,
                               "transfer_from": list(s.transfer_from) if "transfer" in order else []},
                  "identity": {"model": model_identity(model), "results_version": RESULTS_VERSION,
                               "attack_library": attack_library_version()}}
        crafted_in = s.crafting_precision(model_device(model))
        if crafted_in != "fp32":  # (a log without it was crafted in float32, as every log before it)
            header["settings"]["precision"] = crafted_in
        if runlog.BASE_USERS & set(order) and s.base_model is not None:
            header["identity"]["transfer_base"] = model_identity(s.base_model)
        if versions := attack_versions(order):  # (a log without them ran every attack's first version)
            header["identity"]["attack_versions"] = versions
        return header


def run_order(attacks: Sequence[str]) -> list[str]:
    """The order a cascade runs ``attacks`` in: model-free ones (cheap: their examples are on disk) first."""
    return [a for a in attacks if a in MODEL_FREE] + [a for a in attacks if a not in MODEL_FREE]


def corruption_key(name: str, severity: int) -> str:
    """The ``EvalResult.correct`` key of one corruption at one severity, e.g. "fog@3"."""
    return f"{name}@{severity}"


def is_corruption(key: str) -> bool:
    return "@" in key
