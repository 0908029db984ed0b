"""The committed robustness claims re-run as deployed (issue 37, `benchmarks/rerun_claims.sh`), in one
picture: per claim, IG-Defense's image-wise worst case minus the undefended model's, with its paired
95% interval, under each scoring rule. Read from the runs' logs; a run still under way is drawn on the
images it has finished, and its label says how many.

    python benchmarks/claims_figure.py   # -> benchmarks/results/claims_as_deployed.{png,json}
"""

from __future__ import annotations

import sys
from pathlib import Path

from common import RESULTS, write_results
from igdefense.atomic import atomic_path
from igdefense.eval.scoring import RULES
from igdefense.stats import paired_difference
from worst_over_seeds import CannotCombine, worst_over_runs

SMALLCNN_REFINED = "smallcnn-refined, k=13, sigma 8/255"
CLAIMS = {  # label: the runs whose worst case over seeds it is
    f"1: {SMALLCNN_REFINED}": ["eval_smallcnn-refined-sigma8-draws"],
    "2: smallcnn-robust, k=13, sigma 4/255": ["eval_smallcnn-robust-draws"],
    "3: smallcnn-robust, k=3, sigma 4/255": ["eval_smallcnn-robust-k3-draws"],
    f"4: {SMALLCNN_REFINED}, seed 1": ["eval_smallcnn-refined-sigma8-draws-seed1"],
    f"1 and 4: {SMALLCNN_REFINED}, both seeds": ["eval_smallcnn-refined-sigma8-draws",
                                                  "eval_smallcnn-refined-sigma8-draws-seed1"],
}


def differences() -> dict[str, dict]:
    """Per claim with logs: the images counted and, per rule, the paired difference to the base."""
    out = {}
    for label, runs in CLAIMS.items():
        if missing := [f"{run}/lo-ir.jsonl" for run in runs if not (RESULTS / run / "lo-ir.jsonl").is_file()]:
            raise CannotCombine(f"no {missing[0]} in {RESULTS}: claim {label.split(':')[0]} cannot be drawn "
                                f"without it (its command is in benchmarks/rerun_claims.sh)")
        batches, worst = worst_over_runs([RESULTS / run for run in runs])
        if not batches:
            continue
        base = worst["base"]["majority"]  # (a deterministic model: every rule is the same)
        under_way = not all((RESULTS / run / "report.json").is_file() for run in runs)  # (written at the end)
        out[label + (", under way" if under_way else "")] = {
            "runs": runs, "images": len(base), "base": 100 * base.float().mean().item(),
            "defended": 100 * worst["lo-ir"]["majority"].float().mean().item(),
            **{rule: paired_difference(base, worst["lo-ir"][rule]) for rule in RULES}}
    return out


def plot(claims: dict[str, dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 1 + 0.8 * len(claims)))
    for row, (label, c) in enumerate(claims.items()):
        for i, (rule, colour) in enumerate(zip(RULES, ("tab:gray", "tab:blue", "tab:orange"))):
            d = c[rule]
            y = row + (i - 1) * 0.22
            ax.hlines(y, 100 * d.low, 100 * d.high, color=colour)  # (the interval's centre is not the point)
            ax.plot(100 * d.difference, y, "o", color=colour, label=rule if row == 0 else None)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(range(len(claims)), [f"{label}\n{c['images']} images: {c['base']:.1f} -> {c['defended']:.1f} "
                                       "(majority)" for label, c in claims.items()], fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("worst case: IG-Defense minus undefended, points (paired 95% interval)")
    ax.set_title("As deployed: 9 noise draws, IG-Defense's own adaptive attack", fontsize=10)
    ax.legend(title="scoring rule", fontsize=8, loc="upper left")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def main() -> None:
    try:
        claims = differences()
        plot(claims, RESULTS / "claims_as_deployed.png")
    except (CannotCombine, OSError) as e:
        print(f"claims_figure: {e}", file=sys.stderr)
        sys.exit(2)
    rows = {label: {**{k: c[k] for k in ("runs", "images", "base", "defended")},
                    **{rule: str(c[rule]) for rule in RULES}} for label, c in claims.items()}
    for label, row in rows.items():
        print(f"{label} ({row['images']} images): " + "; ".join(f"{rule} {row[rule]}" for rule in RULES))
    print(f"wrote {write_results('claims_as_deployed', {'claims': rows})} and claims_as_deployed.png")


if __name__ == "__main__":
    main()
