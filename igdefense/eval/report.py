"""Evaluation reports: a JSON with per-image results and a Markdown table with paired intervals."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from ..atomic import atomic_path, atomic_write
from .evaluate import EvalResult
from .plan import is_corruption
from .scoring import HEADLINE, RULES
from ..stats import paired_difference, paired_mean_difference


def summary_rows(results: dict[str, EvalResult], baseline: str) -> list[dict]:
    """One row per model: clean, each attack, IW-WC (%), and the paired gain over ``baseline``."""
    base = results[baseline]
    rows = []
    for name, r in results.items():
        row = {"model": name, "n": len(r.correct["clean"]), "clean": 100 * r.clean_accuracy}
        row.update({k: 100 * v for k, v in r.robust_accuracy.items()})
        corrupted = r.corruption_accuracy
        if corrupted:
            row["corruptions"] = 100 * r.mean_corruption_accuracy
        row["iw_wc"] = 100 * r.worst_case_accuracy
        if r.by_rule:  # a randomized defense: iw_wc is the majority rule's; the others, and the mean over draws
            row.update({f"iw_wc {rule}": 100 * r.worst_case_under(rule).float().mean().item()
                        for rule in RULES if rule != HEADLINE})
            row["iw_wc expected"] = 100 * r.expected_worst_case.mean().item()
        if r.screened:  # (eval --screen) its worst case, under every rule, and its gains are upper bounds
            row["screened after"] = r.screened
        if name != baseline:
            bound = "at most " if r.screened else ""
            row["gains"] = {k: bound + str(paired_difference(a, b)) for k, (a, b) in _pairs(base, r).items()}
            if corrupted and _corruption_keys(base) == _corruption_keys(r):
                row["gains"]["corruptions"] = str(paired_mean_difference(base.corruption_per_image,
                                                                         r.corruption_per_image))
        rows.append(row)
    return rows


def _corruption_keys(r: EvalResult) -> list[str]:
    return [k for k in r.correct if is_corruption(k)]


def corruption_table(results: dict[str, EvalResult]) -> str:
    """Markdown: accuracy (%) per corruption, mean over its severities, one column per model."""
    models = [m for m, r in results.items() if r.corruption_accuracy]
    if not models:
        return ""
    names = list(results[models[0]].corruption_accuracy)
    lines = ["| corruption | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for c in names:
        cells = [results[m].corruption_accuracy.get(c, {}) for m in models]
        lines.append(f"| {c} | " + " | ".join(f"{100 * sum(v.values()) / len(v):.2f}" if v else "" for v in cells)
                     + " |")
    return "\n".join(lines)


def rule_table(name: str, r: EvalResult) -> str:
    """Markdown: a randomized model's clean, attack and iw_wc accuracy (%) under every scoring rule,
    and the expected accuracy (the mean over draws; in a cascade cumulative like the columns: per
    image the fewest draws right so far)."""
    steps = [k for k in r.by_rule[HEADLINE] if not is_corruption(k)]  # clean, then the attacks in run order
    fractions = {k: r.right_draws[k].float() / r.draws for k in steps}
    expected, so_far = {}, fractions["clean"]
    for k in steps:
        so_far = torch.minimum(so_far if r.cascade else fractions["clean"], fractions[k])
        expected[k] = so_far
    cells = {rule: [r.by_rule[rule][k].float().mean() for k in steps] + [r.worst_case_under(rule).float().mean()]
             for rule in RULES}
    cells["expected"] = [expected[k].mean() for k in steps] + [r.expected_worst_case.mean()]
    lines = [f"| {name}, {r.draws} draws | " + " | ".join([*steps, "iw_wc"]) + " |",
             "|---|" + "---|" * (len(steps) + 1)]
    lines += [f"| {rule} | " + " | ".join(f"{100 * v:.2f}" for v in row) + " |" for rule, row in cells.items()]
    return "\n".join(lines)


def _pairs(base: EvalResult, other: EvalResult) -> dict:
    """The per-image columns two results share: clean, the attacks whose columns mean the same in
    both (in a cascade only the first attack's column is its own), and the image-wise worst case."""
    a, b = list(base.robust_accuracy), list(other.robust_accuracy)
    if base.cascade or other.cascade:
        shared = a[:1] if a[:1] == b[:1] else []
    else:
        shared = [k for k in a if k in b]
    pairs = {k: (base.correct[k], other.correct[k]) for k in ["clean", *shared]}
    pairs["IW-WC"] = (base.worst_case, other.worst_case)
    if base.by_rule or other.by_rule:  # the other rules too (a deterministic model is the same under each)
        pairs.update({f"IW-WC {rule}": (base.worst_case_under(rule), other.worst_case_under(rule))
                      for rule in RULES if rule != HEADLINE})
    return pairs


def markdown_table(rows: list[dict]) -> str:
    # Rows differ in attacks (the base model skips EOT and transfer): the union, in the order of the
    # row with the most (a cascade's order, which its cumulative columns depend on), IW-WC last.
    ordered = sorted(rows, key=len, reverse=True)
    rules = [c for c in dict.fromkeys(k for r in ordered for k in r) if c.startswith("iw_wc ")]
    last = [c for c in ("iw_wc", *rules, "screened after") if any(c in r for r in rows)]
    cols = [c for c in dict.fromkeys(k for r in ordered for k in r) if c not in ("gains", *last)] + last
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |" for r in rows]
    gains = [f"- {r['model']}: " + "; ".join(f"{k} {v}" for k, v in r["gains"].items()) for r in rows if "gains" in r]
    return "\n".join(lines + ([""] + ["Paired differences vs the first row:"] + gains if gains else []))


def write_report(out_dir: str | os.PathLike, results: dict[str, EvalResult], baseline: str, meta: dict,
                 sanity: list | None = None) -> Path:
    """Write report.json (summary + per-image bools) and report.md into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(results, baseline)
    payload = {**meta, "summary": rows,
               "per_image": {m: {k: v.int().tolist() for k, v in r.correct.items()} for m, r in results.items()},
               "per_image_draws": {m: {"draws": r.draws, **{k: v.tolist() for k, v in r.right_draws.items()}}
                                   for m, r in results.items() if r.right_draws},
               "per_image_by_rule": {m: {rule: {k: v.int().tolist() for k, v in columns.items()}
                                         for rule, columns in r.by_rule.items()}
                                     for m, r in results.items() if r.by_rule},
               "sanity": [str(c) for c in sanity or []]}
    atomic_write(out / "report.json", json.dumps(payload, indent=1) + "\n")
    md = ["# Robustness report", "", "```", json.dumps(meta, indent=1), "```", "", markdown_table(rows)]
    corrupted = corruption_table(results)
    if corrupted:
        md += ["", "## Corruptions (CIFAR-10-C-style, CIFAR parameters; accuracy %, mean over the severities)", "",
               corrupted]
    scored = {n: r.draws for n, r in results.items() if r.by_rule}
    if scored:
        md += ["", "## Under each scoring rule", ""]
        md += [rule_table(n, r) + "\n" for n, r in results.items() if r.by_rule]
        md += ["Randomized models (" + ", ".join(f"{n}: {d} draws" for n, d in scored.items()) + "): every "
                   "example and clean image was classified under that many draws of the model's noise; an image "
                   "counts as right when it is right in more than half of them (the majority rule of Croce et al. "
                   "2022), the headline: clean, each attack and iw_wc. iw_wc one-draw: right under the first "
                   "draw (the rule of single-draw evaluations); every-draw: right under all; expected: the mean "
                   "over draws (in a cascade, an attack that no longer ran on an image counts 0)."]
    if any(r.cascade for r in results.values()):
        md += ["", "Cascade: each attack ran only on the images no earlier attack broke, so every attack "
                   "column after the first is cumulative (right under it and all before it); the last "
                   "one equals iw_wc."]
    if sanity:
        md += ["", "## Sanity checks", ""] + [f"- {c}" for c in sanity]
        failed = [c.name for c in sanity if not c.passed]
        md += ["", f"**{len(failed)} check(s) FAILED: {', '.join(failed)}.** An attack named there is weaker "
                   "on this model than it should be (e.g. its gradients are masked): do not quote it alone; "
                   "the image-wise worst case (iw_wc) over every attack is the number to trust." if failed
               else "All sanity checks passed."]
    atomic_write(out / "report.md", "\n".join(md) + "\n")
    return out / "report.md"


def plot_eps_curves(curves: dict[str, dict[float, float]], path: str | os.PathLike, attack: str) -> Path:
    """Robust accuracy vs eps, one line per model (needs matplotlib: the ``plot`` extra)."""
    from matplotlib.figure import Figure  # (no pyplot: a notebook's backend stays as it is)

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    for name, curve in curves.items():
        eps = sorted(e for e in curve if e < 1)  # eps = 1 (unbounded) is a sanity point, not a curve point
        ax.plot([255 * e for e in eps], [100 * curve[e] for e in eps], marker="o", label=name)
    ax.set_xlabel("eps (x/255, L-inf)")
    ax.set_ylabel(f"accuracy under {attack} (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return Path(path)


def demo_table(base: EvalResult, defended: EvalResult, attack: str, label: str) -> str:
    """``igdefense demo``'s table: clean, the white-box ``attack`` (shown as ``label``), its transfer
    from the base model and the worst case, undefended and defended, then the worst case's paired
    difference and, for a randomized defense, the worst case under the other scoring rules."""
    cols = ["clean", f"{label} (white-box)", f"{label} from the base (transfer)", "worst case"]
    lines = [f"{'':13}" + "".join(f"{c:>{len(c) + 3}}" for c in cols)]
    for name, r, transfer in (("undefended", base, None),
                              ("IG-defended", defended, defended.robust_accuracy["transfer"])):
        values = [r.clean_accuracy, r.robust_accuracy[attack], transfer, r.worst_case_accuracy]
        lines.append(f"{name:13}" + "".join(f"{'-' if v is None else f'{100 * v:.1f}%':>{len(c) + 3}}"
                                            for c, v in zip(cols, values)))
    lines.append(f"\nworst case, IG-defended minus undefended: "
                 f"{paired_difference(base.worst_case, defended.worst_case)}")
    if defended.by_rule:
        one, every = (100 * defended.worst_case_under(r).float().mean().item() for r in ("one-draw", "every-draw"))
        lines.append(f"IG-Defense draws noise: each image counts when right under more than half of {defended.draws} "
                     f"draws (worst case under the first draw alone {one:.1f}%, under every draw {every:.1f}%)")
    return "\n".join(lines)
