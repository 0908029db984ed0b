"""The paper's scale (issue 40) as far as its evaluation logs go, finished or not.

Reads each evaluation folder's logs (checked by igdefense's log reader) and gives, per model, the
cascade's cumulative columns under each scoring rule and the defended worst case's paired difference
to the base's. While a defended model's cascade is unfinished, its worst case so far is an upper
bound (the attacks still to run can only lower it), and so is its gain over the base.

    python benchmarks/paper_scale_summary.py      # -> benchmarks/results/paper_scale_resnet18.{json,md}
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path

import torch

from igdefense._atomic import atomic_write
from igdefense.eval.log import read_records
from igdefense.eval.plan import run_order
from igdefense.eval.scoring import HEADLINE, RULES, columns
from igdefense.eval.stats import paired_difference

RESULTS = Path(__file__).resolve().parent / "results"
FOLDERS = {"sigma 4/255 (the paper's)": "eval_preact-resnet18-robust",
           "sigma 8/255 (the smallcnn sweep's best)": "eval_preact-resnet18-robust-sigma8"}


def read(log: Path) -> dict:
    """A model's logged results: the attacks in run order, the steps every batch finished, per step
    the 0/1 answers and draw counts over all images (batches in order)."""
    header, records = read_records(log)
    last = {r["batch"]: r for r in records}  # a batch's records grow step by step: its last has them all
    settings = header["settings"]
    draws = settings.get("draws", 1)  # (older logs: one draw, and no order: the steps their records have)
    order = settings.get("order") or [a for a in run_order(settings["attacks"]) if records and a in records[-1]]
    done = [s for s in ["clean", *order] if last and all(s in r for r in last.values())]
    batches = [last[b] for b in sorted(last)]
    bits = {s: torch.tensor([v for r in batches for v in r[s]], dtype=torch.bool) for s in done}
    counts = {s: torch.tensor([v for r in batches for v in r["draws"][s]]) for s in done if draws > 1}
    return {"order": order, "draws": draws, "done": done, "bits": bits, "counts": counts,
            "seconds": {s: round(sum(r.get("seconds", {}).get(s, 0) for r in batches), 1) for s in done}}


def summarise(folder: Path) -> dict:
    base, defended = read(folder / "base.jsonl"), read(folder / "lo-ir.jsonl")
    if base["done"][1:] != base["order"]:
        sys.exit(f"{folder}: the base model's cascade is unfinished ({base['done']}); its worst case is the reference")
    base_wc = columns(base["bits"], {}, 1, base["order"], True, HEADLINE)[base["order"][-1]]
    attacks = defended["done"][1:]
    out = {"images": len(base_wc), "base": {"attacks": base["order"], "seconds": base["seconds"],
                                            "clean": _pct(base["bits"]["clean"]), "worst_case": _pct(base_wc)},
           "defended": {"draws": defended["draws"], "attacks_run": attacks,
                        "attacks_to_run": defended["order"][len(attacks):], "seconds": defended["seconds"]}}
    for rule in RULES:
        cols = columns(defended["bits"], defended["counts"], defended["draws"], attacks, True, rule)
        wc = cols[attacks[-1]] if attacks else cols["clean"]
        out["defended"][rule] = {"columns": {k: _pct(v) for k, v in cols.items()}, "worst_case": _pct(wc),
                                 "vs_base": str(paired_difference(base_wc, wc))}
    out["finished"] = not out["defended"]["attacks_to_run"]
    return out


def _pct(bits: torch.Tensor) -> float:
    return round(100 * bits.float().mean().item(), 2)


def markdown(summary: dict) -> str:
    lines = ["# PreAct ResNet-18 (FGSM-RS) + IG-Defense at the paper's scale: the evaluation so far", "",
             "Made by `python benchmarks/paper_scale_summary.py` from the logs in the folders named below. The "
             "base row is the finished cascade (AutoAttack, RayS). A defended row whose cascade is unfinished "
             "is an **upper bound**: the attacks still to run can only lower it, and its gain over the base "
             f"with it. Headline rule: {HEADLINE} (right under more than half of the draws).", ""]
    for setting, s in summary["settings"].items():
        d = s["defended"]
        state = "finished" if s["finished"] else f"unfinished: still to run {', '.join(d['attacks_to_run'])}"
        lines += [f"## {setting}: {s['images']} images ({state})", "",
                  "| model | clean | " + " | ".join(d["attacks_run"]) + " | worst case | vs base |",
                  "|---|---|" + "---|" * len(d["attacks_run"]) + "---|---|",
                  f"| base | {s['base']['clean']:.1f} | " + " | ".join("" for _ in d["attacks_run"])
                  + f" | {s['base']['worst_case']:.1f} | |"]
        for rule in RULES:
            r = d[rule]
            cells = " | ".join(f"{r['columns'][a]:.1f}" for a in d["attacks_run"])
            bound = "" if s["finished"] else " (upper bound)"
            lines.append(f"| IG-Defense, {rule} | {r['columns']['clean']:.1f} | {cells} | "
                         f"{r['worst_case']:.1f}{bound} | {r['vs_base']} |")
        lines += ["", f"Seconds per step: base {s['base']['seconds']}, defended {d['seconds']}.", ""]
    return "\n".join(lines)


def main() -> None:
    summary = {"command": "python benchmarks/paper_scale_summary.py",
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               "settings": {name: summarise(RESULTS / folder) | {"folder": f"benchmarks/results/{folder}"}
                            for name, folder in FOLDERS.items() if (RESULTS / folder / "lo-ir.jsonl").is_file()}}
    atomic_write(RESULTS / "paper_scale_resnet18.json", json.dumps(summary, indent=1) + "\n")
    atomic_write(RESULTS / "paper_scale_resnet18.md", markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
