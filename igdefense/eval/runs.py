"""Evaluation folders read back, finished or not: ``igdefense report DIR [DIR ...]``.

Each folder's logs are read with the checked log reader and refused (``CannotCombine``) unless they
are one evaluation: the same radius and seed, the same images batch by batch, every model built on,
and attacked through, the baseline's weights. One folder gives its summary (:func:`summarise`):
while a model's cascade is unfinished its worst case so far is an **upper bound** (the attacks still
to run can only lower it), and so is its gain over the baseline. Several folders that differ only in
``--seed`` give the image-wise worst case over them (:func:`worst_over_runs`): an image counts as
robust only when it survives every run, under each scoring rule.
"""

from __future__ import annotations

from itertools import takewhile
from pathlib import Path

import torch

from .._identity import FIX
from ..stats import paired_difference, paired_row
from .log import check_header, furthest, read_records
from .plan import run_order
from .scoring import HEADLINE, RULES, columns

Log = tuple[dict, list[str], int, dict[int, dict]]  # header, attacks in run order, draws, records by batch


class CannotCombine(ValueError):
    """Logs that are not one evaluation (or runs that are not one evaluation with other seeds)."""


def read_log(log: Path) -> Log:
    """A model's log: its header, the attacks in run order, the draws, and each batch's furthest record
    (a batch's records grow step by step), over the single-process log ``log`` and every torchrun
    process's (``log.rank<r>``): a run resumed with another number of processes is in both."""
    paths = [p for p in sorted({log, *log.parent.glob(f"{log.name}.rank*")}) if p.exists()]
    parts = [read_records(path) for path in paths]
    # the header naming the most attacks (attacks added to a run since make a later log's longer)
    header = max((h for h, _ in parts), key=lambda h: len(h["settings"].get("order") or ()))
    for path, (theirs, _) in zip(paths, parts):
        if theirs is not header:
            check_header(path, theirs, header)
    done = furthest(r for _, records in parts for r in records)
    records = [done[b] for b in sorted(done)]
    settings = header["settings"]
    draws = settings.get("draws", 1)  # (older logs: one draw, and no order: the steps their records have)
    order = settings.get("order") or [a for a in run_order(settings["attacks"]) if records and a in records[-1]]
    return header, order, draws, done


def read_run(folder: Path, baseline: str = "base") -> dict[str, Log]:
    """Every model's log in one ``igdefense eval --out`` folder, checked to be one evaluation."""
    logs = {}
    names = sorted({p.name.split(".jsonl")[0] for p in Path(folder).glob("*.jsonl*")})  # (and torchrun's .rank<r>)
    for path in (Path(folder) / f"{name}.jsonl" for name in names):
        try:
            logs[path.stem] = read_log(path)
        except (KeyError, TypeError):
            raise CannotCombine(f"{path}'s header is not an igdefense evaluation log's") from None
        except ValueError as e:  # (a log the reader refuses: its message, less the advice for `igdefense eval`)
            raise CannotCombine(str(e).replace(f"; {FIX}", "")) from None
        if "identity" not in logs[path.stem][0]:
            raise CannotCombine(f"{path} was written by igdefense 0.1, which did not record the model, defense and "
                                f"images it belongs to; only logs of igdefense 0.2 or later can be combined")
    if baseline not in logs:
        raise CannotCombine(f"{folder} has no {baseline}.jsonl (the undefended model's log)")
    base_header, *_, base_records = logs[baseline]
    base_model = base_header["identity"]["model"]
    for name, (header, _, _, records) in logs.items():
        if differ := [k for k in ("eps", "norm", "seed", "corruptions")
                      if header["settings"].get(k) != base_header["settings"].get(k)]:
            raise CannotCombine(f"{name}.jsonl and {baseline}.jsonl in {folder} differ in {', '.join(differ)}: "
                                f"they are logs of two evaluations")
        identity = header["identity"]
        built_on = [m for m in (identity["model"].get("model"), identity.get("transfer_base")) if m is not None]
        if name != baseline and (not built_on or any(m != base_model for m in built_on)):
            raise CannotCombine(f"{Path(folder) / name}.jsonl is not built on the model of {baseline}.jsonl beside "
                                f"it: they are logs of two evaluations")
        if other := sorted(b for b in records.keys() & base_records.keys()
                           if records[b].get("digest") != base_records[b].get("digest")):
            raise CannotCombine(f"batch {other[0]} of {name}.jsonl holds other images than {baseline}.jsonl's "
                                f"in {folder}: they are logs of two evaluations")
    return logs


def gather(records: list[dict], steps: list[str], draws: int) -> tuple[dict, dict, dict]:
    """Per step over the batches' images in order: the 0/1 answers, the draw counts, the seconds."""
    bits = {s: torch.tensor([v for r in records for v in r[s]], dtype=torch.bool) for s in steps}
    counts = {s: torch.tensor([v for r in records for v in r["draws"][s]]) for s in steps if draws > 1}
    seconds = {s: round(sum(r.get("seconds", {}).get(s, 0) for r in records), 1) for s in steps}
    return bits, counts, seconds


def summarise(folder: Path, baseline: str = "base") -> dict:
    """Each model against the baseline, on the batches where the baseline's cascade finished and the
    model started (less the last while no attack has run on it); a model's columns are the steps it
    finished on all of them (``"finished"``: every attack on every logged batch; otherwise its worst
    case and gain are upper bounds)."""
    logs = read_run(folder, baseline)
    _, base_order, _, base = logs.pop(baseline)
    out = {"baseline": baseline, "models": {}}
    for name, (header, order, draws, records) in logs.items():
        batches = sorted(b for b in base if b in records and all(s in base[b] for s in ["clean", *base_order]))
        if not batches:
            raise CannotCombine(f"{folder}: no batch has both {baseline}'s finished cascade and {name}'s results")
        attacked = [bool(order) and order[0] in records[b] for b in batches]
        if len(batches) > 1 and not attacked[-1] and all(attacked[:-1]):
            batches = batches[:-1]  # the batch the run has just begun: it would cut every attack's column away
        attacks = list(takewhile(lambda a: all(a in records[b] for b in batches), order))  # the cascade so far
        base_bits, _, base_seconds = gather([base[b] for b in batches], ["clean", *base_order], 1)
        bits, counts, seconds = gather([records[b] for b in batches], ["clean", *attacks], draws)
        base_wc = columns(base_bits, {}, 1, base_order, True, HEADLINE)[base_order[-1]]
        logged = len(base.keys() | records.keys())
        row = {"images": len(base_wc), "batches": f"{len(batches)} of {logged} logged",
               "base": {"attacks": base_order, "seconds": base_seconds,
                        "clean": _pct(base_bits["clean"]), "worst_case": _pct(base_wc)},
               "draws": draws, "attacks_run": attacks, "attacks_to_run": order[len(attacks):], "seconds": seconds}
        for rule in RULES if draws > 1 else (HEADLINE,):
            # Each attack's column as the run reported it (cumulative only in a cascade); the worst case
            # is every column's at once either way.
            cols = columns(bits, counts, draws, attacks, header["settings"].get("cascade", True), rule)
            wc = columns(bits, counts, draws, attacks, True, rule)[attacks[-1] if attacks else "clean"]
            row[rule] = {"columns": {k: _pct(v) for k, v in cols.items()}, "worst_case": _pct(wc),
                         "vs_base": str(paired_difference(base_wc, wc))}
        row["finished"] = not row["attacks_to_run"] and len(batches) == logged
        out["models"][name] = row
    return out


def _pct(bits: torch.Tensor) -> float:
    return round(100 * bits.float().mean().item(), 2)


def summary_markdown(summary: dict) -> str:
    """One table per model of :func:`summarise`: the baseline's row, then one per scoring rule."""
    return "\n".join(line for name, s in summary["models"].items()
                     for line in model_table(f"### {name}", s, summary["baseline"], name))


def model_table(heading: str, s: dict, baseline: str, label: str, seconds_as: str | None = None) -> list[str]:
    """Markdown lines of one model of :func:`summarise` under ``heading``: the baseline's row, then the
    model's (``label``) under each scoring rule, an unfinished cascade's worst case marked an upper bound."""
    state = "finished" if s["finished"] else f"unfinished: still to run {', '.join(s['attacks_to_run'])}"
    rules = [r for r in RULES if r in s]
    lines = [f"{heading}: {s['images']} images, batches {s['batches']} ({state})", "",
             "| model | clean | " + " | ".join(s["attacks_run"]) + " | worst case | vs base |",
             "|---|---|" + "---|" * len(s["attacks_run"]) + "---|---|",
             f"| {baseline} | {s['base']['clean']:.1f} | " + " | ".join("" for _ in s["attacks_run"])
             + f" | {s['base']['worst_case']:.1f} | |"]
    for rule in rules:
        r = s[rule]
        cells = " | ".join(f"{r['columns'][a]:.1f}" for a in s["attacks_run"])
        bound = "" if s["finished"] else " (upper bound)"
        name = f"{label}, {rule}" if len(rules) > 1 else label
        lines.append(f"| {name} | {r['columns']['clean']:.1f} | {cells} | {r['worst_case']:.1f}{bound} | "
                     f"{r['vs_base']} |")
    return lines + ["", f"Seconds per step: {baseline} {s['base']['seconds']}, {seconds_as or label} {s['seconds']}.", ""]


def worst_markdown(result: dict) -> str:
    """:func:`worst_over_runs_rows`' result as a Markdown table."""
    lines = [f"image-wise worst case over {len(result['runs'])} runs (an image counts when it survives every attack "
             f"of every run): {result['images']} images, the batches every run finished", "",
             "| model, rule | base | defended | difference | gained | lost |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['after']} | {r['base']} | {r['defended']} | {r['difference']} | {r['gained']} | {r['lost']} |"
              for r in result["rows"]]
    return "\n".join(lines)


def _without_seed(header: dict) -> dict:
    return {**header, "settings": {k: v for k, v in header["settings"].items() if k != "seed"}}


def worst_over_runs(runs: list[Path], baseline: str = "base") -> tuple[list[int], dict[str, dict[str, torch.Tensor]]]:
    """(batches, {model: {rule: (N,) bool}}): right in every run on the clean image and under every
    attack, on the batches every run finished for every model (none yet: ([], {}))."""
    per_run = [{m: (h, order, draws, {b: r for b, r in records.items() if all(s in r for s in ["clean", *order])})
                for m, (h, order, draws, records) in read_run(run, baseline).items()} for run in runs]
    if other := [str(run) for run, logs in zip(runs, per_run) if logs.keys() != per_run[0].keys()]:
        raise CannotCombine(f"{other[0]} holds logs of other models than {runs[0]} ({sorted(per_run[0])})")
    logs = {m: [logs[m] for logs in per_run] for m in per_run[0]}
    for m, parts in logs.items():
        seeds = [header["settings"].get("seed") for header, *_ in parts]
        if len(set(seeds)) != len(seeds):
            raise CannotCombine(f"the runs of {m} share a seed ({seeds}); give runs with other seeds")
        if any(_without_seed(header) != _without_seed(parts[0][0]) for header, *_ in parts):
            raise CannotCombine(f"the runs of {m} differ in more than the seed (model, defense, attacks or "
                                f"settings); they cannot be combined")
    batches = sorted(set.intersection(*(set(done) for parts in logs.values() for *_, done in parts)))
    if not batches:
        return [], {}
    out = {}
    for m, parts in logs.items():
        if other := [b for b in batches if len({done[b].get("digest") for *_, done in parts}) > 1]:
            raise CannotCombine(f"batch {other[0]} of {m} holds other images in different runs")
        each = []
        for _, order, draws, done in parts:
            bits, counts, _ = gather([done[b] for b in batches], ["clean", *order], draws)
            last = order[-1] if order else "clean"  # (the last cumulative column: clean and every attack)
            each.append({rule: columns(bits, counts, draws, order, True, rule)[last] for rule in RULES})
        out[m] = {rule: torch.stack([r[rule] for r in each]).all(0) for rule in RULES}
    return batches, out


def worst_over_runs_rows(runs: list[Path], baseline: str = "base") -> dict:
    """:func:`worst_over_runs` as paired rows against the baseline: ``{"images", "batches", "rows"}``."""
    if len(runs) < 2:
        raise CannotCombine("give two or more runs of one evaluation with other --seed values")
    batches, worst = worst_over_runs(runs, baseline)
    if not batches:
        raise CannotCombine("no batch is finished in every run for every model yet")
    base = worst.pop(baseline)
    rows = [paired_row(f"{m}, {rule}", "base", base[rule], "defended", w[rule]) for m, w in worst.items() for rule in RULES]
    return {"runs": [str(r) for r in runs], "images": len(base[RULES[0]]), "batches": batches, "rows": rows}
