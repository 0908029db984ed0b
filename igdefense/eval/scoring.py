"""Scoring a randomized defense over draws of its noise, as it is deployed.

An attack's example is classified under ``draws`` fresh draws of the defense's noise (the first is
the one draw every evaluation used before, so that rule is unchanged). Per image and attack the
attacker's best candidate (the one right under the fewest draws) counts, and three rules say
whether the image is robust to it:

- ``one-draw``: right under the first draw (on every candidate, each under its own draw);
- ``majority``: right under more than half of the draws (Croce et al. 2022; the headline);
- ``every-draw``: right under every draw.

The expected accuracy is the mean over draws: per image the fraction of draws it is right under.
Deterministic models are right or wrong once: every rule gives the same answer.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

RULES = ("one-draw", "majority", "every-draw")
HEADLINE = "majority"


def right_draws(model: nn.Module, candidates: Sequence[torch.Tensor], first: Sequence[torch.Tensor],
                y: torch.Tensor, draws: int) -> torch.Tensor:
    """(B,) int: per image, the fewest draws (of ``draws``) under which ``model`` is right on a candidate.
    ``first[c]`` is candidate c's first draw, already classified; the other ``draws - 1`` are drawn here."""
    counts = None
    with torch.no_grad():
        for x, right in zip(candidates, first):
            k = right.long().cpu()
            for _ in range(draws - 1):
                k = k + (model(x).argmax(1) == y).long().cpu()
            counts = k if counts is None else torch.minimum(counts, k)
    return counts


def under(rule: str, bits: torch.Tensor, counts: torch.Tensor | None, draws: int) -> torch.Tensor:
    """Robust under ``rule``: ``bits`` (the first draw's answer) or the draw counts."""
    if counts is None or rule == "one-draw":
        return bits
    if rule == "majority":
        return counts > draws / 2
    if rule == "every-draw":
        return counts == draws
    raise ValueError(f"unknown rule {rule!r}; choose from {RULES}")


def columns(bits: dict[str, torch.Tensor], counts: dict[str, torch.Tensor], draws: int, attacks: Sequence[str],
            cascade: bool, rule: str) -> dict[str, torch.Tensor]:
    """Per step, robust under ``rule``: clean alone; an attack together with clean, and in a cascade
    with every attack run before it (``attacks`` in run order): the cumulative columns of a cascade."""
    clean = under(rule, bits["clean"], counts.get("clean"), draws)
    out = {"clean": clean}
    alive = clean
    for name in attacks:
        step = clean & under(rule, bits[name], counts.get(name), draws)
        alive = alive & step
        out[name] = alive if cascade else step
    return out


def survivors(bits: dict[str, torch.Tensor], counts: dict[str, torch.Tensor], draws: int,
              steps: Sequence[str]) -> torch.Tensor:
    """Right on the clean image and under every attack in ``steps`` by the one-draw rule or by the
    majority rule: the images a cascade attacks next, so that both rules (and every-draw, which
    implies majority) stay exact."""
    out = None
    for rule in ("one-draw", HEADLINE):
        alive = under(rule, bits["clean"], counts.get("clean"), draws).clone()
        for name in steps:
            alive &= under(rule, bits[name], counts.get(name), draws)
        out = alive if out is None else out | alive
    return out
