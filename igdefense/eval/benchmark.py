"""Several models on the same images, one report: what ``igdefense eval`` runs, as a library call.

    plan = Plan(["autoattack", "transfer"], AttackSettings(eps=8 / 255), cascade=True)
    results = benchmark({"base": model, "defended": defended}, loader, plan, out="eval-out", sanity=["defended"])

Batch by batch across the models, the report rewritten after each one: an interrupted run keeps a
paired table on the images every model has done, and resumes from the per-model logs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Iterable, Sequence

import torch
from torch import nn

from ..atomic import atomic_write
from .._hooks import model_device
from .._identity import model_identity, tensor_digest
from .._lock import folder_lock
from ..machine import machine
from ..distributed import shard
from ..stats import paired_difference
from .evaluate import EvalResult, check_log, evaluate_plan
from .log import LogError
from .plan import Plan
from .report import plot_eps_curves, write_report
from .sanity import SANITY_EPS, SANITY_VERSION, Check, check_models, named, spread_sample

CASCADE = Plan(cascade=True)  # benchmark()'s default: APGD-CE, as a cascade


def benchmark(models: dict[str, nn.Module], data: Iterable, plan: Plan = CASCADE, *, out: str | os.PathLike,
              baseline: str | None = None, sanity: Sequence[str] = (),
              sanity_data: tuple[torch.Tensor, torch.Tensor] | None = None, sanity_n: int = 100,
              meta: dict | None = None, screen: bool = False, progress: bool = True) -> dict[str, EvalResult]:
    """Evaluate every model on the same images; write ``out/report.{md,json}`` with paired intervals.

    Args:
        models: {name: model in eval mode}; the same devices as the data will be moved to.
        data: a DataLoader (or list) of (images, labels) batches, the same order on every run.
        plan: what runs on every model (:class:`~igdefense.eval.plan.Plan`); each model gets the
            attacks that can add something on it (:meth:`Plan.for_model`: a deterministic model
            skips the EOT attacks, the transfer source skips ``transfer``).
        out: the report's folder; it also holds ``<name>.jsonl``, the logs a rerun resumes from.
        baseline: the model the others are compared with (default: the first); also the transfer
            source unless the plan's ``settings.base_model`` is set.
        sanity: names of models to run the sanity checks on (:func:`~igdefense.eval.sanity.check_models`),
            after the attacks, on ``sanity_data`` (default: ``sanity_n`` images spread over the
            data); their APGD-CE accuracy-vs-eps curves, and the baseline's, go to ``eps_curve.{json,png}``.
            Their outcome is kept in ``out/sanity.json``, bound to the models, settings and images,
            so a rerun of a finished evaluation does not run them again.
        meta: written at the top of the report (e.g. the model and data names, the command); the
            report adds each model's evaluation seconds, from its log (every run's parts).
        screen: with a cascade, attack a model further only while the attacks so far leave it a way to
            beat the baseline's worst case (it gains more images than it loses: :func:`might_gain`);
            a model stopped is ``screened`` after that attack and its worst case is an upper bound.
            Checked again on every batch, over all the batches so far: a model that might gain again
            gets the rest of the cascade on every batch (its log goes on from where it stopped).

    Returns:
        {name: EvalResult}; the sanity checks are in ``result.sanity`` of the models checked.
    """
    if not isinstance(models, dict) or not models:
        raise ValueError("models must be a non-empty dict: pass {name: model}")
    logs = [log_path(".", name).name for name in models]
    if clash := next((f for f in logs if logs.count(f) > 1), None):
        raise ValueError(f"two model names share the log file {clash} ('/' becomes '_'): rename one")
    baseline = baseline or next(iter(models))
    unknown = [n for n in [baseline, *sanity] if n not in models]
    if unknown:
        raise ValueError(f"{unknown} are not among the models {list(models)}")
    plan = plan.with_base(models[baseline])
    plans = {name: plan.for_model(model) for name, model in models.items()}
    if idle := [name for name, p in plans.items() if plan.attacks and not p.attacks]:
        raise ValueError(f"none of the attacks {list(plan.attacks)} runs on {idle[0]!r}, so its worst case would be "
                         f"its clean accuracy: add one that runs on every model, e.g. apgd-ce (transfer skips its "
                         f"source model, adaptive needs a defense that names its own attack, *-eot a randomized model)")
    if screen and not plan.cascade:
        raise ValueError("screen=True needs a cascade: only a cascade's columns bound the worst case attack by attack")
    out = Path(out)
    with folder_lock(out, "evaluation"):  # one run writes a report folder at a time
        meta = {**(meta or {}), "eps": plan.settings.eps, "attacks": list(plan.attacks), "cascade": plan.cascade,
                "seed": plan.settings.seed, **({"screen": True} if screen else {})}
        rank, world = shard()
        for name, model in models.items():  # every log is checked before any is written to
            check_log(log_path(out, name), model, plans[name])
        results: dict[str, EvalResult] = {}
        batches: list = []
        data = [data] if isinstance(data, tuple) else data
        total = len(data) if hasattr(data, "__len__") else None
        for batch in data:
            batches.append(batch)  # earlier batches resume from the logs; each is loaded once
            done = len(batches)
            if done % world and done != total:
                continue  # under torchrun, one new batch per process each round: they run side by side
            for name in [baseline, *(n for n in models if n != baseline)]:  # (the baseline first: the screen's)
                options = dict(log_path=log_path(out, name), progress=progress, whole_data=done == total,
                               desc=f"{name}, batch {done}" + (f"/{total}" if total else ""))
                if screen and name != baseline:
                    results[name] = _screened(models[name], batches, plans[name], results[baseline], **options)
                else:
                    results[name] = evaluate_plan(models[name], batches, plans[name], **options)
                if rank == 0:  # every model so far, on the images all have done
                    n = min(len(r.correct["clean"]) for r in results.values())
                    write_report(out, {k: r.first(n) for k, r in results.items()}, baseline,
                                 {**meta, "images_done": n, **_screened_after(results), **_seconds(results)})
        if not batches:
            raise ValueError("data holds no batches")
        if world > 1:
            torch.distributed.barrier()  # no process leaves (closing its connections) while another still gathers
        if rank > 0:
            return results  # rank 0 reports
        checks = []
        if sanity:
            x, y = sanity_data if sanity_data is not None else spread_sample(batches, sanity_n)
            device = model_device(models[baseline])
            key = _sanity_key(models, plans, out, baseline, sanity, x, y)
            found, curves = _read_sanity(out / SANITY_FILE, key) or (None, None)
            if found is None:  # not yet run on this run's models, settings and images
                found, curves = check_models(models, sanity, baseline, x.to(device), y.to(device), plan.settings,
                                             progress=progress)
                _write_sanity(out / SANITY_FILE, key, found, curves)
            for name, c in found.items():
                results[name].sanity = c
            checks = named(found)
            _write_eps_curves(curves, out)
        meta["run"] = {**meta.get("run", {}), "machine": machine(),
                       "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
        write_report(out, results, baseline, {**meta, "images_done": len(results[baseline].correct["clean"]),
                                              **_screened_after(results), **_seconds(results)}, checks)
        return results


def might_gain(undefended: torch.Tensor, bound: torch.Tensor) -> bool:
    """Whether a model whose per-image worst case is at most ``bound`` (e.g. right under the transfer
    attack) can have a higher worst-case accuracy than the ``undefended`` one on these images: only
    if the bound gains more images than it loses (later attacks gain none, lose more)."""
    d = paired_difference(undefended, bound)
    return d.b_only > d.a_only


def _screened(model: nn.Module, batches: list, plan: Plan, baseline: EvalResult, **options) -> EvalResult:
    """``model``'s cascade on ``batches``, stopped after the first attack that leaves it no way to beat
    the ``baseline``'s worst case (``screened``: that attack), else all of it."""
    order = plan.order(options["log_path"])
    for attack in order[:-1]:  # (after the last attack the bound is the result)
        bound = evaluate_plan(model, batches, plan, until=attack, **options)
        if not might_gain(baseline.worst_case, bound.worst_case):
            bound.screened = attack
            return bound
    return evaluate_plan(model, batches, plan, **options)


def _screened_after(results: dict[str, EvalResult]) -> dict:
    """The report's word on screened models: their worst case is an upper bound."""
    screened = {name: r.screened for name, r in results.items() if r.screened}
    return {"screened": screened, "screened_means": "{model: the attack after which it could no longer gain}: the "
            "attacks after it were not run, its worst case is an upper bound"} if screened else {}


SANITY_FILE = "sanity.json"  # the checks' outcome, bound to what they ran on: a rerun does not repeat them


def _sanity_key(models, plans, out: Path, baseline: str, names: Sequence[str], x: torch.Tensor,
                y: torch.Tensor) -> dict:
    """What the sanity checks' outcome depends on: the models and attack settings (each log's header
    but its attack order: adding an attack does not change the checks) and the checked images."""
    headers = {}
    for name in dict.fromkeys([baseline, *names]):
        header = plans[name].header(models[name], plans[name].order(log_path(out, name)))
        headers[name] = {**header, "settings": {k: v for k, v in header["settings"].items() if k != "order"}}
    return {"models": headers, "checked": list(names), "baseline": baseline,
            "transfer_base": model_identity(plans[baseline].settings.base_model)
            if plans[baseline].settings.base_model is not None else None,
            "images": tensor_digest(x, y), "sanity_version": SANITY_VERSION}


def _read_sanity(path: Path, key: dict) -> tuple[dict[str, list[Check]], dict[str, dict[float, float]]] | None:
    """The checks and eps curves in ``path`` when they were made with ``key``; None when there are
    none yet or they belong to another run. A file that is not what this version writes is refused."""
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        if saved["key"] != json.loads(json.dumps(key)):
            return None
        checks = {name: [Check(str(n), p, str(d)) for n, p, d in found] for name, found in saved["checks"].items()}
        curves = {name: {float(e): float(a) for e, a in c.items()} for name, c in saved["curves"].items()}
        eps_values = sorted({*SANITY_EPS, key["models"][key["baseline"]]["settings"]["eps"]})
        if (list(checks) != key["checked"] or not all(found for found in checks.values())
                or not all(isinstance(c.passed, bool) for found in checks.values() for c in found)):
            raise ValueError("its checks are not one list of PASS/FAIL per checked model")
        if list(curves) != list(key["models"]) or any(sorted(c) != eps_values or not all(0 <= a <= 1 for a in c.values())
                                                      for c in curves.values()):
            raise ValueError("its eps curves are not an accuracy at each eps of each model")
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as e:
        raise LogError(f"{path} is not a sanity-check file this version writes ({e!r}); delete it to run "
                       "the checks again") from None
    return checks, curves


def _write_sanity(path: Path, key: dict, checks: dict[str, list[Check]], curves: dict[str, dict[float, float]]) -> None:
    atomic_write(path, json.dumps({"key": key, "checks": {n: [[c.name, c.passed, c.detail] for c in found]
                                                          for n, found in checks.items()},
                                   "curves": {n: {repr(e): a for e, a in c.items()} for n, c in curves.items()}}))


def log_path(folder: str | os.PathLike, name: str) -> Path:
    """``folder/<name>.jsonl``, a model's resumable log; a "/" in the name (sigma=4/255) is not a folder."""
    return Path(folder) / f"{name.replace('/', '_')}.jsonl"


def _seconds(results: dict[str, EvalResult]) -> dict[str, dict]:
    """The report's lines on cost: each model's evaluation seconds, and where its log has steps of
    unknown time (written before times were kept) how many, as the seconds are then a lower bound."""
    out: dict[str, dict] = {"seconds": {k: round(r.total_seconds, 1) for k, r in results.items()}}
    untimed = {k: r.untimed for k, r in results.items() if r.untimed}
    if untimed:
        out["untimed_steps"] = untimed
    return out


def _write_eps_curves(curves: dict[str, dict[float, float]], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "eps_curve.json",
                 json.dumps({name: {f"{255 * e:g}/255": a for e, a in c.items()} for name, c in curves.items()}))
    try:
        plot_eps_curves(curves, out / "eps_curve.png", "APGD-CE")
    except ImportError:
        print("matplotlib is missing (pip install 'igdefense[plot]'): eps_curve.json written, no plot")
