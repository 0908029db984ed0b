"""The paper's scale (issues 40 and 54) as far as its evaluation logs go, finished or not.

`igdefense report FOLDER` (igdefense.eval.runs) for each of the paper-scale evaluation folders, as one
committed result: per defended model (IG-Defense, ``lo-ir``; the random-mask control where it was run),
its columns under each scoring rule and its worst case's paired difference to the base's. While a
defended model's attacks are unfinished, its worst case so far is an upper bound (the attacks still to
run can only lower it), and so is its gain over the base.

    python benchmarks/paper_scale_summary.py              # the CPU run (benchmarks/paper_scale_eval.sh)
    python benchmarks/paper_scale_summary.py --run h200   # the unfinished H200 run of 2026-12-04
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

from igdefense.atomic import atomic_write
from igdefense.eval import runs
from igdefense.eval.scoring import HEADLINE, RULES

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = {  # run: (output name, {setting: folder})
    "cpu": ("paper_scale_resnet18-cpu", {
        "the paper's protocol: AutoAttack standard, one draw": "paper_protocol_preact-resnet18-robust",
        "the paper's protocol: AutoAttack rand, one draw": "paper_protocol_preact-resnet18-robust-rand",
        "ours, sigma 4/255 (the paper's)": "eval_preact-resnet18-robust-cpu",
        "ours, sigma 8/255 (the smallcnn sweep's best)": "eval_preact-resnet18-robust-cpu-sigma8"}),
    "h200": ("paper_scale_resnet18", {
        "sigma 4/255 (the paper's)": "eval_preact-resnet18-robust",
        "sigma 8/255 (the smallcnn sweep's best)": "eval_preact-resnet18-robust-sigma8"}),
}
LABELS = {"lo-ir": "IG-Defense", "random-mask": "random mask (control)"}


def summarise(folder: Path) -> dict:
    """Each defended model against the base, as :func:`igdefense.eval.runs.summarise` gives it."""
    return {name: {"images": s["images"], "batches": s["batches"], "base": s["base"], "finished": s["finished"],
                   "defended": {k: s[k] for k in ("draws", "attacks_run", "attacks_to_run", "seconds", *RULES)
                                if k in s}}
            for name, s in runs.summarise(folder)["models"].items()}


def markdown(summary: dict) -> str:
    lines = ["# PreAct ResNet-18 (FGSM-RS) + IG-Defense at the paper's scale: the evaluation so far", "",
             f"Made by `{summary['command']}` from the logs in the folders named below. A defended row whose "
             "attacks are unfinished is an **upper bound** on these images: the attacks still to run can only "
             f"lower it, and the gain's point estimate with it. Headline rule: {HEADLINE} (right under more "
             "than half of the draws). The paper's protocol scores AutoAttack's examples as deployed, under one "
             "fresh draw of the defense's noise; AutoAttack's own printout would count an image broken once any "
             "draw of its checks is fooled (and skip an image its first noisy forward gets wrong), so it can read "
             "lower than these rows.", ""]
    for setting, models in summary["settings"].items():
        for name, s in models.items():
            if name == "folder":
                continue
            label = LABELS.get(name, name)
            lines += runs.model_table(f"## {setting}, {label}", {**s, **s["defended"]}, "base", label, "defended")
        lines += [f"Logs: `{models['folder']}`.", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", choices=sorted(RUNS), default="cpu")
    args = ap.parse_args()
    name, folders = RUNS[args.run]
    try:
        settings = {setting: summarise(RESULTS / folder) | {"folder": f"benchmarks/results/{folder}"}
                    for setting, folder in folders.items() if (RESULTS / folder / "lo-ir.jsonl").is_file()}
    except runs.CannotCombine as e:
        print(f"paper_scale_summary: {e}", file=sys.stderr)
        sys.exit(2)
    command = "python benchmarks/paper_scale_summary.py" + ("" if args.run == "cpu" else f" --run {args.run}")
    summary = {"command": command, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "settings": settings}
    atomic_write(RESULTS / f"{name}.json", json.dumps(summary, indent=1) + "\n")
    atomic_write(RESULTS / f"{name}.md", markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
