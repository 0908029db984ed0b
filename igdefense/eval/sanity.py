"""Sanity checks that catch a robustness number inflated by gradient masking or a weak attack
(Carlini et al. 2019, "On Evaluating Adversarial Robustness"; Athalye et al. 2018).

Comparisons between attacks are paired (same images) and fail only beyond noise: when the 95%
confidence interval of the difference excludes zero in the wrong direction.
"""

from __future__ import annotations

import sys
import dataclasses
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._hooks import model_device
from ..defense import RandomizedDefense
from ..attacks import AttackSettings, attack_names, run_attack
from ..stats import paired_difference

SANITY_EPS = (2 / 255, 4 / 255, 16 / 255, 32 / 255, 1.0)  # with the evaluation's own eps: the eps curve
SANITY_VERSION = 1  # raise when the checks change: a stored outcome (benchmark's sanity.json) is then not reused


@dataclass
class Check:
    """One sanity check's verdict: its name, whether it passed, and what it measured."""

    name: str
    passed: bool
    detail: str

    def __str__(self) -> str:
        return f"[{'PASS' if self.passed else 'FAIL'}] {self.name}: {self.detail}"


def _correct(model, x, y, attack: str, settings: AttackSettings, source: nn.Module | None = None,
             bar: tqdm | None = None) -> torch.Tensor:
    """Per image: ``model`` is right on the clean image and on every candidate of ``attack``
    crafted on ``source`` (default: ``model`` itself; another model = a transfer attack)."""
    if bar is not None:
        bar.set_postfix_str(f"{attack}, eps {255 * settings.eps:g}/255")
    with torch.no_grad():
        ok = (model(x).argmax(1) == y).cpu()
    for x_adv in run_attack(attack, source or model, x, y, settings):
        with torch.no_grad():
            ok &= (model(x_adv).argmax(1) == y).cpu()
    if bar is not None:
        bar.update()
    return ok


def correct_vs_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values=(8 / 255, 16 / 255, 32 / 255, 1.0),
                   attack: str = "apgd-ce", settings: AttackSettings | None = None,
                   bar: tqdm | None = None) -> dict[float, torch.Tensor]:
    """Per-image correctness under ``attack`` at each radius (for the eps sweep and the robustness curve)."""
    base = settings or AttackSettings()
    return {e: _correct(model, x, y, attack, AttackSettings(**{**base.__dict__, "eps": e}), bar=bar)
            for e in eps_values}


def accuracy_vs_eps(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps_values=(8 / 255, 16 / 255, 32 / 255, 1.0),
                    attack: str = "apgd-ce", settings: AttackSettings | None = None) -> dict[float, float]:
    """Accuracy under ``attack`` at each radius."""
    return {e: c.float().mean().item() for e, c in correct_vs_eps(model, x, y, eps_values, attack, settings).items()}


def gradient_check(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> Check:
    """The input gradient of the loss is finite and non-zero for every image."""
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    finite = torch.isfinite(grad).all().item()
    zero = int((grad.flatten(1).abs().amax(1) == 0).sum())
    return Check("gradients", finite and zero == 0, f"finite={finite}, images with an all-zero gradient: {zero}/{len(x)}")


def not_weaker(name: str, strong: torch.Tensor, weak: torch.Tensor, strong_name: str, weak_name: str) -> Check:
    """``strong`` (per-image correctness under the attack that should be stronger) must not leave
    more images correct than ``weak`` beyond noise (the paired 95% interval is above zero)."""
    d = paired_difference(weak, strong)
    return Check(name, d.low <= 0, f"{strong_name} {100 * strong.float().mean():.1f}%, {weak_name} "
                                   f"{100 * weak.float().mean():.1f}%; difference {d}")


def run_sanity_checks(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, attack: str = "apgd-ce",
                      eps: float = AttackSettings.eps, settings: AttackSettings | None = None,
                      black_box: str = "square", base_model: nn.Module | None = None, tolerance: float = 0.03,
                      sweep: dict[float, torch.Tensor] | None = None, bar: tqdm | None = None) -> list[Check]:
    """Run the checks on one batch; failures are printed loudly to stderr.

    - gradients are finite and non-zero;
    - eps sweep: accuracy must not rise with eps (beyond ``tolerance``) and must be ~0
      (<= ``tolerance``) for an unbounded attack (eps = 1 covers the whole image box);
    - more steps: ``attack`` with 100 steps must not leave more images correct than with 10;
    - white-box vs black-box: ``attack`` must not be weaker than ``black_box``;
    - white-box vs transfer (with ``base_model``): ``attack`` on the model must not be weaker than
      the same attack crafted on the undefended base model; for a randomized model (IGDefense)
      also its EOT version (``attack + "-eot"``, when it exists), and for an IGDefense
      ``apgd-ce-bpda`` (gradients through a smoother pseudo-label).
    The last three are paired comparisons that fail only beyond noise (95% interval).

    ``sweep``: a :func:`correct_vs_eps` result for these images and ``attack``, including ``eps``
    and 1.0 (computed when None); its run at ``eps`` is the 100-step white-box result.
    ``bar``: a progress bar advanced after each attack run (:func:`_attack_runs` of them with ``sweep``).
    """
    base = AttackSettings(**{**(settings or AttackSettings()).__dict__, "eps": eps})
    x, y = x.to(model_device(model)), y.to(model_device(model))  # as evaluate does
    checks = [gradient_check(model, x, y)]
    if sweep is None or not {eps, 1.0} <= set(sweep):
        sweep = correct_vs_eps(model, x, y, (eps, 16 / 255, 32 / 255, 1.0), attack, base, bar)
    acc = {e: sweep[e].float().mean().item() for e in sorted(sweep)}
    accs = list(acc.values())
    monotone = all(b <= a + tolerance for a, b in zip(accs, accs[1:]))
    text = ", ".join(f"{e * 255:.0f}/255: {100 * a:.1f}%" for e, a in acc.items())
    checks.append(Check("eps sweep", monotone and acc[1.0] <= tolerance, text))
    many = sweep[eps]  # the same attack at eps: not run twice
    steps = max(1, base.n_iter // 10)  # (a tenth of the steps: 10 of the default 100)
    few = _correct(model, x, y, attack, AttackSettings(**{**base.__dict__, "n_iter": steps}), bar=bar)
    checks.append(not_weaker("more steps", many, few, f"{attack} {base.n_iter} steps", f"{steps} steps"))
    bb = _correct(model, x, y, black_box, base, bar=bar)
    checks.append(not_weaker("white-box vs black-box", many, bb, attack, black_box))
    if base_model is not None:
        transfer = _correct(model, x, y, attack, base, source=base_model, bar=bar)
        checks.append(not_weaker("white-box vs transfer", many, transfer, attack, f"{attack} from the base model"))
        if _has_eot(model, attack):
            eot = _correct(model, x, y, f"{attack}-eot", base, bar=bar)
            checks.append(not_weaker("EOT white-box vs transfer", eot, transfer,
                                     f"{attack}-eot ({base.eot_iter} draws)", f"{attack} from the base model"))
        if _has_bpda(model, attack):
            bpda = _correct(model, x, y, "apgd-ce-bpda", base, bar=bar)
            checks.append(not_weaker("BPDA white-box vs transfer", bpda, transfer, "apgd-ce-bpda (tau=1 gradients)",
                                     "apgd-ce from the base model"))
    for c in checks:
        if not c.passed:
            print(f"\n!!! SANITY CHECK FAILED: {c}\n", file=sys.stderr)
    return checks


def _has_eot(model: nn.Module, attack: str) -> bool:
    return isinstance(model, RandomizedDefense) and f"{attack}-eot" in attack_names()


def _has_bpda(model: nn.Module, attack: str) -> bool:
    return isinstance(model, RandomizedDefense) and attack == "apgd-ce"


def _attack_runs(model: nn.Module, attack: str, with_transfer: bool) -> int:
    """How many attack runs :func:`run_sanity_checks` makes when given its eps sweep (for a progress bar)."""
    return 2 + with_transfer * (1 + _has_eot(model, attack) + _has_bpda(model, attack))


def check_models(models: dict[str, nn.Module], names: Sequence[str], baseline: str, x: torch.Tensor, y: torch.Tensor,
                 settings: AttackSettings, progress: bool = True
                 ) -> tuple[dict[str, list[Check]], dict[str, dict[float, float]]]:
    """The sanity checks of an evaluation of several models, in one place: :func:`run_sanity_checks`
    on each of ``names`` (the transfer comparisons from ``settings.base_model``, except on the
    ``baseline`` itself), and the APGD-CE accuracy at each of :data:`SANITY_EPS` and the evaluation's
    eps of those models and the baseline (its eps sweep is the checks' own, not run twice).

    Returns:
        ({name: checks}, {name: {eps: accuracy}}).
    """
    eps_values = sorted({*SANITY_EPS, settings.eps})
    for name in dict.fromkeys([baseline, *names]):
        if isinstance(models[name], RandomizedDefense):
            # Noise from a fixed point, not from wherever the evaluation left it: a rerun gets the same checks.
            models[name].reseed(settings.seed * 1000 + 999)
    swept = list(dict.fromkeys([baseline, *names]))
    transfer_from = {name: None if name == baseline else settings.base_model for name in names}
    runs = len(eps_values) * len(swept) + sum(_attack_runs(models[n], "apgd-ce", transfer_from[n] is not None)
                                              for n in names)
    with tqdm(total=runs, desc=f"sanity checks on {len(x)} images", unit="attack", disable=not progress) as bar:
        per_image = {name: correct_vs_eps(models[name], x, y, eps_values, settings=settings, bar=bar) for name in swept}
        checks = {name: run_sanity_checks(models[name], x, y, eps=settings.eps, sweep=per_image[name],
                                          settings=settings, base_model=transfer_from[name], bar=bar)
                  for name in names}
    curves = {name: {e: c.float().mean().item() for e, c in p.items()} for name, p in per_image.items()}
    return checks, curves


def named(checks: dict[str, list[Check]]) -> list[Check]:
    """Every model's checks in one list, each named after its model when there are several."""
    if len(checks) == 1:
        return next(iter(checks.values()))
    return [dataclasses.replace(c, name=f"{name}: {c.name}") for name, found in checks.items() for c in found]


def spread_sample(batches: Iterable, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images spread evenly over the batches (class-ordered data then still gives every class)."""
    total = sum(len(y) for _, y in batches)
    wanted = set(torch.linspace(0, total - 1, min(n, total)).round().long().tolist())
    xs, ys, seen = [], [], 0
    for x, y in batches:
        rows = [j for j in range(len(y)) if seen + j in wanted]
        xs.append(x[rows])
        ys.append(y[rows])
        seen += len(y)
    return torch.cat(xs), torch.cat(ys)
