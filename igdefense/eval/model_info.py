"""An evaluated model as a RobustBench entry: ``model_info/<dataset>/<threat_model>/<id>.json``, the
fields RobustBench's own files have, accuracies as strings as it stores them.

What igdefense does not know is left empty, never invented: a zoo model has no paper (``link``,
``authors``, ``venue``, ``reported`` are ""), and ``autoattack_acc`` is AutoAttack's own accuracy only
where the report has it alone (not a cascade's cumulative column). ``external`` is the image-wise
worst case under the majority rule over every attack the evaluation ran, the adaptive one included.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from torch import nn

from ..atomic import atomic_write
from ..attacks import AttackSettings
from ..defense import IGDefense
from .evaluate import EvalResult
from .scoring import HEADLINE

IG_DEFENSE_LINK = "https://arxiv.org/abs/2409.15190"  # Kulkarni & Weng, ECCV 2024


def entry(result: EvalResult, *, name: str, architecture: str, dataset: str, eps: float, forward_passes: int,
          data: str, defense: str = "", additional_data: bool | str = "", norm: str = "Linf") -> dict:
    """The fields of one RobustBench ``model_info`` entry for ``result`` (a model of a report);
    ``defense``: the footnote's sentence on the test-time defense around the model ("" for none)."""
    order = [k for k in result.correct if k != "clean" and "@" not in k]
    alone = "autoattack" in order and (not result.cascade or order[0] == "autoattack")
    scored = (f"each example classified under {result.draws} draws of the model's noise and counted right in more "
              f"than half ({HEADLINE} rule)") if result.by_rule else "one forward pass per example (deterministic)"
    footnote = (f"igdefense evaluation: image-wise worst case over {', '.join(order)}; {scored}; "
                f"{len(result.correct['clean'])} images of {data}." + (f" {defense}" if defense else ""))
    failed = [c.name for c in result.sanity if not c.passed]
    return {"link": IG_DEFENSE_LINK if defense else "", "name": name, "authors": "",
            "additional_data": additional_data, "number_forward_passes": forward_passes, "dataset": dataset,
            "venue": "", "architecture": architecture, "eps": eps_string(eps, norm),
            "clean_acc": f"{100 * result.clean_accuracy:.2f}", "reported": "",
            "autoattack_acc": f"{100 * result.robust_accuracy['autoattack']:.2f}" if alone else "",
            "external": f"{100 * result.worst_case_accuracy:.2f}",
            "footnote": footnote + (f" Sanity checks failed: {', '.join(failed)}." if failed else ""),
            "unreliable": bool(failed) if result.sanity else ""}


def eps_string(eps: float, norm: str) -> str:
    """The radius as RobustBench writes it: L-inf in 255ths ("8/255"), L2 and L1 as the number ("0.5")."""
    return f"{255 * eps:g}/255" if norm == "Linf" else f"{eps:g}"


def write_entries(folder: str | os.PathLike, entries: dict[str, dict], dataset: str, threat_model: str) -> list[Path]:
    """Write ``folder/model_info/<dataset>/<threat_model>/<id>.json`` for each {id: entry}."""
    paths = []
    for model_id, fields in entries.items():
        path = Path(folder) / "model_info" / (dataset or "unknown") / threat_model / \
            f"{re.sub(r'[^A-Za-z0-9._+-]+', '-', model_id)}.json"
        atomic_write(path, json.dumps(fields, indent=2) + "\n")
        paths.append(path)
    return paths


def write_model_info(out, model_name: str, models: dict[str, nn.Module], results: dict[str, EvalResult], data,
                     settings: AttackSettings) -> list[Path]:
    """``out``/model_info/<dataset>/<threat>/<model>_<name>.json: each model of an evaluation (``models``,
    "base" the undefended one) as a RobustBench entry; the paths written."""
    dataset = {"CIFAR10": "cifar10", "CIFAR100": "cifar100"}.get(type(data).__name__, "")
    base = models["base"]
    architecture = type(getattr(base, "model", base)).__name__  # (inside a Normalized wrapper)
    slug = re.sub(r"[^\w.+-]+", "-", model_name)
    entries = {}
    for name, model in models.items():
        defended = isinstance(model, IGDefense)
        label = model_name if not defended else \
            f"{model_name} + IG-Defense ({name}, k={model.k}, sigma {255 * model.sigma:g}/255)"
        entries[f"{slug}_{name}"] = entry(
            results[name], name=label, architecture=architecture + (" + IG-Defense" if defended else ""),
            dataset=dataset, eps=settings.eps, norm=settings.norm, data=data.description,
            forward_passes=model.n_samples + 1 if defended else 1, defense=_defense_note(name) if defended else "",
            additional_data=False if model_name.startswith("smallcnn-") else "")  # (the zoo's: CIFAR-10 only)
    return write_entries(out, entries, dataset, settings.norm)


def _defense_note(name: str) -> str:
    """The model_info footnote's sentence on an IGDefense model: the method, or the ablation control."""
    if name == "random-mask":
        return ("Ablation control, not the method: IG-Defense's two passes (Kulkarni & Weng, ECCV 2024) "
                "with a random mask in place of the IG ranking, randomized.")
    return "Test-time defense: IG-Defense (Kulkarni & Weng, ECCV 2024), randomized."
