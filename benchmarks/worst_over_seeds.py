"""The image-wise worst case over several runs of one evaluation that differ only in --seed (the
attacks' random starts and the noise draws): an image counts as robust only when it survives every
run, under each scoring rule. Reads the runs' logs with igdefense's log reader (every record checked)
and combines only runs whose headers differ in the seed alone, batch by batch on the same images.

    python benchmarks/worst_over_seeds.py benchmarks/results/eval_smallcnn-refined-sigma8-draws \
        benchmarks/results/eval_smallcnn-refined-sigma8-draws-seed1

Writes benchmarks/results/worst_over_seeds-<first run's folder>.json. Only the images every run has
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
from paper_scale_summary import gather, read


class CannotCombine(ValueError):
    """Runs that are not one evaluation with other seeds, or a log that is not a finished part of one."""


def finished(log: Path) -> tuple[dict, list[str], int, dict[int, dict]]:
    """A model's log (header, attacks in run order, draws) and the batches whose every step is logged."""
    if not log.is_file() or not log.stat().st_size:
        raise CannotCombine(f"no {log}, or it is empty")
    try:
        header, order, draws, records = read(log)
    except ValueError as e:  # (a log the reader refuses: its message, less the advice for `igdefense eval`)
        raise CannotCombine(str(e).replace(f"; {FIX}", "")) from None
    except (KeyError, TypeError):
        raise CannotCombine(f"{log}'s header is not an igdefense evaluation log's") from None
    if "identity" not in header:
        raise CannotCombine(f"{log} was written by igdefense 0.1, which did not record the model, defense and "
                            f"images it belongs to; only logs of igdefense 0.2 or later can be combined")
    return header, order, draws, {b: r for b, r in records.items() if all(s in r for s in ["clean", *order])}


def without_seed(header: dict) -> dict:
    return {**header, "settings": {k: v for k, v in header["settings"].items() if k != "seed"}}


def worst_over_runs(runs: list[Path]) -> tuple[list[int], dict[str, dict[str, torch.Tensor]]]:
    """(batches, {model: {rule: (N,) bool}}): right in every run on the clean image and under every
    attack, on the batches every run finished for every model (none yet: ([], {}))."""
    models = sorted(p.stem for p in runs[0].glob("*.jsonl"))
    if not models:
        raise CannotCombine(f"{runs[0]} has no evaluation logs (*.jsonl)")
    logs = {m: [finished(run / f"{m}.jsonl") for run in runs] for m in models}
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
        per_run = []
        for _, order, draws, done in parts:
            bits, counts, _ = gather([done[b] for b in batches], ["clean", *order], draws)
            # (the last cumulative column: right on the clean image and under every attack)
            last = order[-1] if order else "clean"
            per_run.append({rule: columns(bits, counts, draws, order, True, rule)[last] for rule in RULES})
        out[m] = {rule: torch.stack([r[rule] for r in per_run]).all(0) for rule in RULES}
    return batches, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="--out folders of `igdefense eval` runs")
    parser.add_argument("--baseline", default="base")
    args = parser.parse_args()
    try:
        if missing := [str(r) for r in args.runs if not r.is_dir()]:
            raise CannotCombine(f"no such folder: {', '.join(missing)}")
        batches, worst = worst_over_runs(args.runs)
        if not batches:
            raise CannotCombine("no batch is finished in every run for every model yet")
        if args.baseline not in worst:
            raise CannotCombine(f"no {args.baseline}.jsonl in {args.runs[0]}; name the baseline with --baseline")
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
    path = write_results(f"worst_over_seeds-{args.runs[0].name}", {
        "runs": [str(r) for r in args.runs], "images": images, "batches": batches, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
