"""The paper's scale (issue 40) as far as its evaluation logs go, finished or not.

`igdefense report FOLDER` (igdefense.eval.runs) for each of the paper-scale evaluation folders, as one
committed result: per model, the cascade's cumulative columns under each scoring rule and the
defended worst case's paired difference to the base's. While a defended model's cascade is
unfinished, its worst case so far is an upper bound (the attacks still to run can only lower it),
and so is its gain over the base.

    python benchmarks/paper_scale_summary.py      # -> benchmarks/results/paper_scale_resnet18.{json,md}
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

from igdefense.atomic import atomic_write
from igdefense.eval import runs
from igdefense.eval.scoring import HEADLINE, RULES

RESULTS = Path(__file__).resolve().parent / "results"
FOLDERS = {"sigma 4/255 (the paper's)": "eval_preact-resnet18-robust",
           "sigma 8/255 (the smallcnn sweep's best)": "eval_preact-resnet18-robust-sigma8"}


def summarise(folder: Path) -> dict:
    """The defended model (lo-ir) against the base, as :func:`igdefense.eval.runs.summarise` gives it."""
    s = runs.summarise(folder)["models"]["lo-ir"]
    defended = {k: s[k] for k in ("draws", "attacks_run", "attacks_to_run", "seconds", *RULES)}
    return {"images": s["images"], "batches": s["batches"], "base": s["base"], "defended": defended,
            "finished": s["finished"]}


def markdown(summary: dict) -> str:
    lines = ["# PreAct ResNet-18 (FGSM-RS) + IG-Defense at the paper's scale: the evaluation so far", "",
             "Made by `python benchmarks/paper_scale_summary.py` from the logs in the folders named below. The "
             "base row is the finished cascade (AutoAttack, RayS). A defended row whose cascade is unfinished "
             "is an **upper bound** on these images: the attacks still to run can only lower it, and the "
             f"gain's point estimate with it. Headline rule: {HEADLINE} (right under more than half of the draws).", ""]
    for setting, s in summary["settings"].items():
        lines += runs.model_table(f"## {setting}", {**s, **s["defended"]}, "base", "IG-Defense", "defended")
    return "\n".join(lines)


def main() -> None:
    try:
        settings = {name: summarise(RESULTS / folder) | {"folder": f"benchmarks/results/{folder}"}
                    for name, folder in FOLDERS.items() if (RESULTS / folder / "lo-ir.jsonl").is_file()}
    except runs.CannotCombine as e:
        print(f"paper_scale_summary: {e}", file=sys.stderr)
        sys.exit(2)
    summary = {"command": "python benchmarks/paper_scale_summary.py",
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "settings": settings}
    atomic_write(RESULTS / "paper_scale_resnet18.json", json.dumps(summary, indent=1) + "\n")
    atomic_write(RESULTS / "paper_scale_resnet18.md", markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
