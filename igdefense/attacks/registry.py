"""Attacks by name: one record each (its kind, the budget fields it reads, the function), as timm
registers models. A new attack is one module with one ``@register_attack``; the evaluation, its log
identity, the attack cache and the command line's help all read this registry.

An attack is ``run(model, x, y, settings) -> candidates``: a tensor like ``x``, or a list of them (an
image survives only if the model is right on every candidate). It never judges itself (as foolbox's
attacks): :func:`igdefense.evaluate` re-classifies, checks the eps-ball and scores over draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

KINDS = ("white-box", "black-box", "transfer", "adaptive")


@dataclass(frozen=True)
class Attack:
    """One registered attack. ``budgets``: the :class:`AttackSettings` fields it reads; ``version``:
    raised when what it computes changes (logs and caches are bound to both)."""

    name: str
    kind: str
    run: Callable
    budgets: tuple[str, ...] = ()
    version: int = 1


_ATTACKS: dict[str, Attack] = {}


def register_attack(name: str, kind: str, *, budgets: tuple[str, ...] = (), version: int = 1
                    ) -> Callable[[Callable], Callable]:
    """Decorator registering ``run(model, x, y, settings)`` as attack ``name``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")

    def add(run: Callable) -> Callable:
        from .settings import AttackSettings  # (settings reads this registry: imported when first used)

        if unknown := set(budgets) - AttackSettings.__dataclass_fields__.keys():
            raise ValueError(f"{name}: budgets {sorted(unknown)} are not fields of AttackSettings")
        if name in _ATTACKS:
            raise ValueError(f"an attack named {name!r} is registered already")
        _ATTACKS[name] = Attack(name, kind, run, tuple(budgets), version)
        return run
    return add


def get_attack(name: str) -> Attack:
    """The record of attack ``name``; a one-line error naming the choices if there is none."""
    if name not in _ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose from {attack_names()}")
    return _ATTACKS[name]


def attack_names(kind: str | None = None) -> tuple[str, ...]:
    """The registered attacks' names (of one kind), in registration order."""
    return tuple(n for n, a in _ATTACKS.items() if kind is None or a.kind == kind)


def attack_versions(names) -> dict[str, int]:
    """The versions of the attacks ``names`` that have been changed since they were first logged (a
    log's identity records them: an older log of a changed attack is another run's)."""
    return {n: get_attack(n).version for n in names if get_attack(n).version > 1}
