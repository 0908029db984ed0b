"""The explanation-robustness report: report.json, report.md and a figure grid a person reads at a glance."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..atomic import atomic_path, atomic_write
from .._validation import json_loads
from .metrics import LOWER_IS_CLOSER, METRICS
from .robustness import Study

ARROWS = {m: "lower = closer" if m in LOWER_IS_CLOSER else "higher = closer" for m in METRICS}


KIND = "explain-robustness"  # report.json's "kind": what tells a study's folder from another run's


def check_study_folder(out_dir: str | os.PathLike) -> None:
    """Refuse a folder holding anything but an explanation study's files (an evaluation, a sweep, ...):
    a study replaces its own report and figures, never another run's."""
    out = Path(out_dir)
    if not out.is_dir():
        return
    foreign = []
    for f in out.iterdir():
        if f.name.startswith(".") or (f.is_file() and (f.name == "report.md" or  # (its lock and mark)
                                                            (f.name.startswith("grid-") and f.suffix == ".png"))):
            continue
        if f.name == "report.json" and f.is_file() and _is_study(f):
            continue
        foreign.append(f.name)
    if foreign:
        raise FileExistsError(f"{out} holds another run's files ({', '.join(sorted(foreign)[:5])}): an explanation "
                              "study writes report.json, report.md and its figures there; use another --out")


def write_study(out_dir: str | os.PathLike, model, study: Study, images: torch.Tensor, labels: torch.Tensor,
                perturbed: dict[str, torch.Tensor], methods, meta: dict, class_names, *, seed: int = 0,
                rows: int = 6, **options) -> Path:
    """A study's folder, whole: one figure per attack (``rows`` images spread over the batch, each of
    ``methods``' clean and adversarial maps; ``options``: :func:`explain`'s), then ``report.md`` and
    ``report.json`` last (a report means its figures are there). An earlier run's report and figures
    go first, under the folder's lock."""
    from .._lock import folder_lock
    from .maps import explain

    out = Path(out_dir)
    picked = torch.linspace(0, len(images) - 1, min(rows, len(images))).round().long()
    x = images[picked]
    with folder_lock(out, "explanation study"):
        clear_study_folder(out)
        for attack in meta["attacks"]:  # (perturbed also holds the noise control's images)
            adversarial = perturbed[attack]
            maps = {m: (explain(model, x, method=m, seed=seed, **options),
                        explain(model, adversarial[picked], method=m, seed=seed, **options)) for m in methods}
            plot_grid(x, adversarial[picked], maps, out / f"grid-{attack}.png",
                      title=f"{meta['model']}, {attack} eps {meta['eps']:.3g}",
                      labels=[class_names[int(c)] for c in labels[picked]])
        return write_study_report(out, study, meta)


def clear_study_folder(out_dir: str | os.PathLike) -> None:
    """Check ``out_dir`` (:func:`check_study_folder`) and remove an earlier run's report and figures: none
    of them may sit beside this run's, nor a report beside figures a kill left half made (the report is
    written last). Call it holding the folder's lock."""
    out = Path(out_dir)
    check_study_folder(out)
    for stale in [*out.glob("grid-*.png"), out / "report.json", out / "report.md"]:
        stale.unlink(missing_ok=True)


def _is_study(path: Path) -> bool:
    try:
        report = json_loads(path.read_text())
    except (OSError, ValueError):
        return False
    per_image = report.get("per_image") if isinstance(report, dict) else None
    # (the committed studies were written before "kind": their per-image metrics tell them)
    return report.get("kind") == KIND or (isinstance(per_image, dict) and "metrics" in per_image) \
        if isinstance(report, dict) else False


def write_study_report(out_dir: str | os.PathLike, study: Study, meta: dict) -> Path:
    """report.json (summary + per-image values) and report.md in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    summary = study.summary()
    per_image = {"correct": {k: v.int().tolist() for k, v in study.correct.items()},
                 "sensitivity_max": {k: [None if a != a else a for a in v.tolist()]  # NaN (empty map): null
                                     for k, v in study.sensitivity.items()},
                 "flipped": {k: v.int().tolist() for k, v in study.flipped.items()},
                 "metrics": {p: {m: {k: v.tolist() for k, v in d.items()} for m, d in methods.items()}
                             for p, methods in study.metrics.items()}}
    atomic_write(out / "report.json", json.dumps({"kind": KIND, **meta, "summary": summary, "per_image": per_image},
                                                 indent=1))
    md = ["# Explanation robustness", "", "```", json.dumps(meta, indent=1), "```", "",
          "Accuracy (%): " + ", ".join(f"{k} {v:.1f}" for k, v in summary["accuracy"].items()), ""]
    for attack, a in summary["attacks"].items():
        md += [f"## {attack} (eps {meta.get('eps')}): prediction flipped on {a['flipped']} of {a['n']} images; "
               f"accuracy {a['accuracy_drop']}", "",
               "Clean vs perturbed map, mean [95% interval]. 'noise': random +-eps sign noise of the same size. "
               "The attack is seen when attack - noise is beyond noise. AUROC: how well the metric alone tells "
               "the attacked images from the noise-perturbed ones (0.5 = not at all, 1 = perfectly).", "",
               "| method | metric | all | flipped | not flipped | noise | attack - noise (paired) | AUROC |",
               "|---|---|---|---|---|---|---|---|"]
        for method, metrics in a["methods"].items():
            for metric, v in metrics.items():
                md.append(f"| {method} | {metric} ({ARROWS[metric]}) | {_fmt(v['all'])} | {_fmt(v['flipped'])} | "
                          f"{_fmt(v['not_flipped'])} | {_fmt(v['noise'])} | {v['attack_minus_noise']} | {v['auroc']:.3f} |")
        md.append("")
    if summary["sensitivity_max"]:
        md += ["## Sensitivity (captum's sensitivity_max: largest relative map change under U(-0.02, 0.02) noise)", "",
               "Images whose clean map is empty (all zero) have no relative change and are left out.", "",
               "| method | mean [95% interval] | images |", "|---|---|---|"]
        md += [f"| {m} | {_fmt(v)} | {v['n']} of {len(study.sensitivity[m])} |"
               for m, v in summary["sensitivity_max"].items()]
    atomic_write(out / "report.md", "\n".join(md) + "\n")
    return out / "report.md"


def _fmt(v: dict) -> str:
    if not v["n"]:
        return "-"
    return f"{v['mean']:.3f} [{v['low']:.3f}, {v['high']:.3f}]" if v["n"] > 1 else f"{v['mean']:.3f}"


def plot_grid(images: torch.Tensor, adversarial: torch.Tensor, maps: dict[str, tuple[torch.Tensor, torch.Tensor]],
              path: str | os.PathLike, title: str = "", labels: list[str] | None = None) -> Path:
    """One row per image: the image, the adversarial image, then each method's clean and adversarial map."""
    from matplotlib.figure import Figure  # (no pyplot: a notebook's backend stays as it is)

    n, cols = len(images), 2 + 2 * len(maps)
    fig = Figure(figsize=(1.6 * cols, 1.7 * n))
    axes = fig.subplots(n, cols, squeeze=False)
    headers = ["image", "adversarial"] + [f"{m} {w}" for m in maps for w in ("clean", "adv.")]
    for i in range(n):
        panels = [images[i].permute(1, 2, 0), adversarial[i].permute(1, 2, 0)]
        for clean, adv in maps.values():
            panels += [clean[i], adv[i]]
        for j, (ax, panel) in enumerate(zip(axes[i], panels)):
            ax.imshow(panel.clamp(0, 1).numpy() if j < 2 else panel.numpy(), cmap=None if j < 2 else "inferno",
                      interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(headers[j], fontsize=8)
        if labels:
            axes[i][0].set_ylabel(labels[i], fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    return Path(path)
