"""A tuned setting's gain on the images its sweep never saw.

``igdefense sweep`` picks the setting with the best worst case on its images; on those same images
that setting's gain is the best of about ten, so it is optimistic (a selection effect). An
``igdefense eval`` of the setting on more images that include the sweep's mixes the two. This splits
the evaluation's images (worst case over its runs, which differ only in ``--seed``) into those the
sweep selected on and the others, and gives the paired gain on each under every scoring rule: the
held-out one is the estimate to quote.

    python benchmarks/held_out.py --sweep benchmarks/results/sweep_smallcnn-refined \
        --eval benchmarks/results/eval_smallcnn-refined-sigma8-draws benchmarks/results/eval_smallcnn-refined-sigma8-draws-seed1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, print_table, recorded_run, write_results  # noqa: E402

from igdefense.data import balanced_indices  # noqa: E402
from igdefense.eval.runs import worst_over_runs  # noqa: E402
from igdefense.eval.scoring import RULES  # noqa: E402
from igdefense.stats import paired_row  # noqa: E402


def images_of(folder: Path, command: str) -> np.ndarray:
    """The dataset indices of the images a recorded run was on, in its order."""
    run = recorded_run(folder, command)
    data = run.data.open("test")
    return np.asarray(balanced_indices(data.labels, run.n, order=getattr(run.data, "order", "class")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sweep", type=Path, required=True, help="the igdefense sweep folder the setting came from")
    ap.add_argument("--eval", type=Path, nargs="+", required=True, help="igdefense eval folders of the setting "
                    "(several: runs that differ only in --seed; the worst case over them)")
    ap.add_argument("--json", type=Path, default=None, help="write the JSON here (default: benchmarks/results/"
                    "held_out-<first eval folder>.json)")
    args = ap.parse_args()
    sweep, evals = recorded_run(args.sweep, "sweep"), [recorded_run(f, "eval") for f in args.eval]
    if any(run.data != sweep.data for run in evals):
        sys.exit(f"held_out: the sweep and the evaluations read other data ({sweep.data} vs {evals[0].data})")
    seen = set(images_of(args.sweep, "sweep").tolist())
    order = images_of(args.eval[0], "eval")
    if any(not np.array_equal(images_of(f, "eval"), order) for f in args.eval[1:]):
        sys.exit("held_out: the evaluations are on other images from each other")
    _, worst = worst_over_runs(args.eval)  # (per model and rule, per image: right in every run)
    selected = torch.tensor([i in seen for i in order[:len(worst["base"][RULES[0]])]])
    rows = []
    for name, keep in (("the sweep's images", selected), ("held out from the sweep", ~selected),
                       ("all", torch.ones_like(selected))):
        for model, by_rule in worst.items():
            if model == "base":
                continue
            for rule in RULES:
                row = paired_row(f"{model}, {rule}", "base", worst["base"][rule][keep], "defended", by_rule[rule][keep])
                rows.append({"images": f"{name} ({int(keep.sum())})", **row})
    print_table(rows, ["images", "after", "base", "defended", "difference", "gained", "lost"])
    path = write_results(f"held_out-{args.eval[0].name}", {
        "sweep": str(args.sweep), "evals": [str(f) for f in args.eval], "images": len(selected),
        "selected_by_the_sweep": int(selected.sum()), "rows": rows}, args.json)
    print("wrote", path)


if __name__ == "__main__":
    main()
