"""The image-wise worst case over several runs of one evaluation that differ only in --seed (the
attacks' random starts and the noise draws): an image counts as robust only when it survives every
run, under each scoring rule. Reads the runs' logs with igdefense's log reader (every record checked)
and combines only runs whose headers differ in the seed alone, batch by batch on the same images.

    python benchmarks/worst_over_seeds.py benchmarks/results/eval_smallcnn-refined-sigma8-draws \
        benchmarks/results/eval_smallcnn-refined-sigma8-draws-seed1

Writes benchmarks/results/worst_over_seeds-<every run's folder, joined by +>.json. Only the images every run has
finished for every model count (a run still under way gives a partial answer, and says so).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from common import paired_row, print_table, write_results
from igdefense._identity import FIX
from igdefense.eval.scoring import RULES, columns
from paper_scale_summary import gather, read_run


class CannotCombine(ValueError):
    """Runs that are not one evaluation with other seeds, or a log that is not a finished part of one."""


def finished(run: Path, baseline: str) -> dict[str, tuple[dict, list[str], int, dict[int, dict]]]:
    """A run's logs, checked to be one evaluation (`read_run`): per model its header, attacks in run order,
    draws, and the batches whose every step is logged."""
    try:
        logs = read_run(run, baseline)
    except ValueError as e:  # (a log the reader refuses: its message, less the advice for `igdefense eval`)
        raise CannotCombine(str(e).replace(f"; {FIX}", "")) from None
    return {m: (header, order, draws, {b: r for b, r in records.items() if all(s in r for s in ["clean", *order])})
            for m, (header, order, draws, records) in logs.items()}


def without_seed(header: dict) -> dict:
    return {**header, "settings": {k: v for k, v in header["settings"].items() if k != "seed"}}


def worst_over_runs(runs: list[Path], baseline: str = "base") -> tuple[list[int], dict[str, dict[str, torch.Tensor]]]:
    """(batches, {model: {rule: (N,) bool}}): right in every run on the clean image and under every
    attack, on the batches every run finished for every model (none yet: ([], {}))."""
    per_run = [finished(run, baseline) for run in runs]
    if other := [str(run) for run, logs in zip(runs, per_run) if logs.keys() != per_run[0].keys()]:
        raise CannotCombine(f"{other[0]} holds logs of other models than {runs[0]} ({sorted(per_run[0])})")
    logs = {m: [logs[m] for logs in per_run] for m in per_run[0]}
    for m, parts in logs.items():
        seeds = [header["settings"].get("seed") for header, *_ in parts]
        if len(set(seeds)) != len(seeds):
            raise CannotCombine(f"the runs of {m} share a seed ({seeds}); give runs with other seeds")
        if any(without_seed(header) != without_seed(parts[0][0]) for header, *_ in parts):
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
            # (the last cumulative column: right on the clean image and under every attack)
            last = order[-1] if order else "clean"
            each.append({rule: columns(bits, counts, draws, order, True, rule)[last] for rule in RULES})
        out[m] = {rule: torch.stack([r[rule] for r in each]).all(0) for rule in RULES}
    return batches, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="--out folders of `igdefense eval` runs (two or more)")
    parser.add_argument("--baseline", default="base", help="the undefended model's log name (default: base)")
    args = parser.parse_args()
    try:
        if len(args.runs) < 2:
            raise CannotCombine("give two or more runs of one evaluation with other --seed values")
        if missing := [str(r) for r in args.runs if not r.is_dir()]:
            raise CannotCombine(f"no such folder: {', '.join(missing)}")
        batches, worst = worst_over_runs(args.runs, args.baseline)
        if not batches:
            raise CannotCombine("no batch is finished in every run for every model yet")
    except CannotCombine as e:
        print(f"worst_over_seeds: {e}", file=sys.stderr)
        sys.exit(2)
    base = worst.pop(args.baseline)
    rows = [paired_row(f"{m}, {rule}", "base", base[rule], "defended", w[rule]) for m, w in worst.items()
            for rule in RULES]
    images = len(base[RULES[0]])
    print(f"image-wise worst case over {len(args.runs)} runs: {images} images ({len(batches)} batches) done in "
          f"every run")
    print_table(rows, ["after", "base", "defended", "difference", "gained", "lost"])
    # (named after every run: another set of runs never replaces this one's file)
    path = write_results("worst_over_seeds-" + "+".join(sorted(r.resolve().name for r in args.runs)), {
        "runs": [str(r) for r in args.runs], "images": images, "batches": batches, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
