"""The image-wise worst case over several runs of one evaluation that differ only in --seed, as a
committed result: `igdefense report RUN RUN ...` (igdefense.eval.runs) written to benchmarks/results.

    python benchmarks/worst_over_seeds.py benchmarks/results/eval_smallcnn-refined-sigma8-draws \
        benchmarks/results/eval_smallcnn-refined-sigma8-draws-seed1

Writes benchmarks/results/worst_over_seeds-<every run's folder, joined by +>.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common import print_table, write_results
from igdefense.eval.runs import CannotCombine, worst_over_runs, worst_over_runs_rows

__all__ = ["CannotCombine", "worst_over_runs"]  # (claims_figure.py's)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="--out folders of `igdefense eval` runs (two or more)")
    parser.add_argument("--baseline", default="base", help="the undefended model's log name (default: base)")
    args = parser.parse_args()
    try:
        if missing := [str(r) for r in args.runs if not r.is_dir()]:
            raise CannotCombine(f"no such folder: {', '.join(missing)}")
        result = worst_over_runs_rows(args.runs, args.baseline)
    except CannotCombine as e:
        print(f"worst_over_seeds: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"image-wise worst case over {len(args.runs)} runs: {result['images']} images ({len(result['batches'])} "
          "batches) done in every run")
    print_table(result["rows"], ["after", "base", "defended", "difference", "gained", "lost"])
    # (named after every run: another set of runs never replaces this one's file)
    path = write_results("worst_over_seeds-" + "+".join(sorted(r.resolve().name for r in args.runs)),
                         result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
