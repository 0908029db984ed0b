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
from itertools import takewhile
from pathlib import Path

import torch

from igdefense._atomic import atomic_write
from igdefense.eval.log import read_records
from igdefense.eval.plan import run_order
from igdefense.eval.scoring import HEADLINE, RULES, columns
from igdefense.stats import paired_difference

RESULTS = Path(__file__).resolve().parent / "results"
FOLDERS = {"sigma 4/255 (the paper's)": "eval_preact-resnet18-robust",
           "sigma 8/255 (the smallcnn sweep's best)": "eval_preact-resnet18-robust-sigma8"}


def read(log: Path) -> tuple[dict, list[str], int, dict[int, dict]]:
    """A model's log: its header, the attacks in run order, the draws, and each batch's last record (a
    batch's records grow step by step: its last has them all)."""
    header, records = read_records(log)
    settings = header["settings"]
    draws = settings.get("draws", 1)  # (older logs: one draw, and no order: the steps their records have)
    order = settings.get("order") or [a for a in run_order(settings["attacks"]) if records and a in records[-1]]
    return header, order, draws, {r["batch"]: r for r in records}


def read_run(folder: Path, baseline: str = "base") -> dict[str, tuple[dict, list[str], int, dict[int, dict]]]:
    """Every model's log in one `igdefense eval --out` folder, each read with `read`, refused (ValueError)
    unless they are one evaluation: the same radius and seed, the same images batch by batch, and every other
    model built on, and attacked through, the baseline's weights. A log copied in from another run stops here."""
    logs = {}
    for path in sorted(folder.glob("*.jsonl")):
        try:
            logs[path.stem] = read(path)
        except (KeyError, TypeError):
            raise ValueError(f"{path}'s header is not an igdefense evaluation log's") from None
        if "identity" not in logs[path.stem][0]:
            raise ValueError(f"{path} was written by igdefense 0.1, which did not record the model, defense and "
                             f"images it belongs to; only logs of igdefense 0.2 or later can be combined")
    if baseline not in logs:
        raise ValueError(f"{folder} has no {baseline}.jsonl (the undefended model's log)")
    base_header, *_, base_records = logs[baseline]
    base_model = base_header["identity"]["model"]
    for name, (header, _, _, records) in logs.items():
        if differ := [k for k in ("eps", "norm", "seed", "corruptions")
                      if header["settings"].get(k) != base_header["settings"].get(k)]:
            raise ValueError(f"{name}.jsonl and {baseline}.jsonl in {folder} differ in {', '.join(differ)}: "
                             f"they are logs of two evaluations")
        identity = header["identity"]
        built_on = [m for m in (identity["model"].get("model"), identity.get("transfer_base")) if m is not None]
        if name != baseline and (not built_on or any(m != base_model for m in built_on)):
            raise ValueError(f"{folder / name}.jsonl is not built on the model of {baseline}.jsonl beside it: "
                             f"they are logs of two evaluations")
        if other := sorted(b for b in records.keys() & base_records.keys()
                           if records[b].get("digest") != base_records[b].get("digest")):
            raise ValueError(f"batch {other[0]} of {name}.jsonl holds other images than {baseline}.jsonl's "
                             f"in {folder}: they are logs of two evaluations")
    return logs


def gather(records: list[dict], steps: list[str], draws: int) -> tuple[dict, dict, dict]:
    """Per step over the batches' images in order: the 0/1 answers, the draw counts, the seconds."""
    bits = {s: torch.tensor([v for r in records for v in r[s]], dtype=torch.bool) for s in steps}
    counts = {s: torch.tensor([v for r in records for v in r["draws"][s]]) for s in steps if draws > 1}
    seconds = {s: round(sum(r.get("seconds", {}).get(s, 0) for r in records), 1) for s in steps}
    return bits, counts, seconds


def summarise(folder: Path) -> dict:
    """Base vs defended on the batches where the base's cascade finished and the defended one started;
    the defended columns are the steps it finished on all of them."""
    logs = read_run(folder)
    _, base_order, _, base = logs["base"]
    _, order, draws, defended = logs["lo-ir"]
    batches = sorted(b for b in base if b in defended and all(s in base[b] for s in ["clean", *base_order]))
    if not batches:
        raise ValueError(f"{folder}: no batch has both the base's finished cascade and the defended model's results")
    attacks = list(takewhile(lambda a: all(a in defended[b] for b in batches), order))  # the cascade so far
    base_bits, _, base_seconds = gather([base[b] for b in batches], ["clean", *base_order], 1)
    bits, counts, seconds = gather([defended[b] for b in batches], ["clean", *attacks], draws)
    base_wc = columns(base_bits, {}, 1, base_order, True, HEADLINE)[base_order[-1]]
    logged = len(base.keys() | defended.keys())
    out = {"images": len(base_wc), "batches": f"{len(batches)} of {logged} logged",
           "base": {"attacks": base_order, "seconds": base_seconds,
                    "clean": _pct(base_bits["clean"]), "worst_case": _pct(base_wc)},
           "defended": {"draws": draws, "attacks_run": attacks, "attacks_to_run": order[len(attacks):],
                        "seconds": seconds}}
    for rule in RULES:
        cols = columns(bits, counts, draws, attacks, True, rule)
        wc = cols[attacks[-1]] if attacks else cols["clean"]
        out["defended"][rule] = {"columns": {k: _pct(v) for k, v in cols.items()}, "worst_case": _pct(wc),
                                 "vs_base": str(paired_difference(base_wc, wc))}
    out["finished"] = not out["defended"]["attacks_to_run"] and len(batches) == logged
    return out


def _pct(bits: torch.Tensor) -> float:
    return round(100 * bits.float().mean().item(), 2)


def markdown(summary: dict) -> str:
    lines = ["# PreAct ResNet-18 (FGSM-RS) + IG-Defense at the paper's scale: the evaluation so far", "",
             "Made by `python benchmarks/paper_scale_summary.py` from the logs in the folders named below. The "
             "base row is the finished cascade (AutoAttack, RayS). A defended row whose cascade is unfinished "
             "is an **upper bound** on these images: the attacks still to run can only lower it, and the "
             f"gain's point estimate with it. Headline rule: {HEADLINE} (right under more than half of the draws).", ""]
    for setting, s in summary["settings"].items():
        d = s["defended"]
        state = "finished" if s["finished"] else f"unfinished: still to run {', '.join(d['attacks_to_run'])}"
        lines += [f"## {setting}: {s['images']} images, batches {s['batches']} ({state})", "",
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
    try:
        settings = {name: summarise(RESULTS / folder) | {"folder": f"benchmarks/results/{folder}"}
                    for name, folder in FOLDERS.items() if (RESULTS / folder / "lo-ir.jsonl").is_file()}
    except ValueError as e:
        print(f"paper_scale_summary: {e}", file=sys.stderr)
        sys.exit(2)
    summary = {"command": "python benchmarks/paper_scale_summary.py",
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "settings": settings}
    atomic_write(RESULTS / "paper_scale_resnet18.json", json.dumps(summary, indent=1) + "\n")
    atomic_write(RESULTS / "paper_scale_resnet18.md", markdown(summary))
    print(markdown(summary))


if __name__ == "__main__":
    main()
