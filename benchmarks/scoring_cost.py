"""What scoring over draws and IG-Defense's own adaptive attack cost, against today's cascade.

On the same class-balanced test images, IG-Defense on a zoo model goes through the cascade three
times (resumable logs in runs/scoring_cost/):
  A. today's: transfer, AutoAttack, APGD-CE-EOT, RayS, each example classified under one draw;
  B. the same attacks, each example (and clean image) classified under ``--draws`` draws;
  C. B with the adaptive attack (``adaptive``) second, after the transfer.
The base model's examples (the transfer's source, cached) are crafted before any config is timed.
Reported: each step's seconds, B / A and C / A (goal: C under 1.3 x A), the floor of the scoring
(``draws - 1`` forward passes of every example scored, timed alone), and the worst case under each rule.

    python benchmarks/scoring_cost.py [--model smallcnn-refined] [--sigma 8/255] [--images 100]
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results  # noqa: E402

from igdefense import IGDefense, zoo  # noqa: E402
from igdefense.parse import fraction  # noqa: E402
from igdefense.data import CIFAR10, balanced_loader, cache_dir  # noqa: E402
from igdefense.attacks import run_attack  # noqa: E402
from igdefense.eval import AttackSettings, evaluate  # noqa: E402
from igdefense.attacks import TRANSFER_SOURCES  # noqa: E402
from igdefense.stats import paired_difference  # noqa: E402
from igdefense.rankings.cache import cached_lo_ir  # noqa: E402

CASCADE = ["transfer", "autoattack", "apgd-ce-eot", "rays"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smallcnn-refined", choices=zoo.available())
    p.add_argument("--sigma", type=fraction, default=8 / 255)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--draws", type=int, default=AttackSettings.draws)
    a = p.parse_args()
    torch.manual_seed(0)
    model = zoo.load(a.model)
    rankings = zoo.rankings(a.model) if a.model in zoo.with_rankings() else cached_lo_ir(model, CIFAR10("train"), 200,
                                                                                          name=a.model)
    defense = IGDefense(model, rankings, sigma=a.sigma, seed=0).eval()
    data = CIFAR10("test")
    x, y = next(iter(balanced_loader(data, a.images, batch_size=a.images)))
    runs = Path("runs") / "scoring_cost" / f"{a.model}-sigma{255 * a.sigma:g}-n{a.images}"
    configs = {"A": (1, CASCADE), "B": (a.draws, CASCADE), "C": (a.draws, ["transfer", "adaptive", *CASCADE[1:]])}
    rows, results = {}, {}
    warm = AttackSettings(eps=8 / 255, seed=0, cache=cache_dir() / "adversarial")
    for source in TRANSFER_SOURCES:  # the base model's examples, crafted once and cached: no config pays for them
        run_attack(source, model, x, y, warm)
    for name, (draws, attacks) in configs.items():
        settings = AttackSettings(eps=8 / 255, seed=0, draws=draws, base_model=model, cache=cache_dir() / "adversarial")
        # (the undefended model: EOT and the transfer from itself add nothing to a deterministic model)
        base = evaluate(model, (x, y), ["autoattack", "rays"], settings=settings, cascade=True,
                        desc=f"{name}: undefended", log_path=runs / f"{name}-undefended.jsonl")
        r = evaluate(defense, (x, y), attacks, settings=settings, cascade=True, desc=f"{name}: IG-Defense",
                     log_path=runs / f"{name}-defended.jsonl")
        results[name] = r
        rules = {rule: r.worst_case_under(rule) for rule in ("one-draw", "majority", "every-draw")}
        rows[name] = {"draws": draws, "attacks": attacks, "seconds": {k: round(v, 1) for k, v in r.seconds.items()},
                      "total_seconds": round(r.total_seconds, 1), "untimed_steps": r.untimed,
                      "worst_case": {rule: 100 * v.float().mean().item() for rule, v in rules.items()},
                      "worst_case_vs_undefended": {rule: vars(paired_difference(base.worst_case, v))
                                                   for rule, v in rules.items()},
                      "expected_worst_case": 100 * r.expected_worst_case.mean().item(),
                      "undefended_worst_case": 100 * base.worst_case_accuracy}
    # the floor of scoring: (draws - 1) more forward passes of every example it classified
    with torch.no_grad():
        defense(x)
        t0 = time.perf_counter()
        for _ in range(3):
            defense(x)
        forward = (time.perf_counter() - t0) / 3
    scored = {k: int(v.numel()) for k, v in results["B"].right_draws.items()}  # (clean + one example per attack)
    # examples per image: the clean image, one per transfer source, two of APGD-CE-EOT on a randomized
    # model (the last fooling step and the highest-loss one), one of every other attack
    examples = {"transfer": len(TRANSFER_SOURCES), "apgd-ce-eot": 2}
    floor = forward * (a.draws - 1) * (1 + sum(examples.get(attack, 1) for attack in CASCADE))
    total = {k: rows[k]["total_seconds"] for k in rows}
    payload = {"model": a.model, "sigma": f"{255 * a.sigma:g}/255", "k": defense.k, "images": len(y),
               "data": "CIFAR-10 test, class-balanced", "rows": rows,
               "ratios": {"B/A (scoring over draws)": total["B"] / total["A"],
                          "C/A (scoring + adaptive)": total["C"] / total["A"], "goal C/A": 1.3},
               "scoring_floor": {"forward_seconds_full_batch": forward, "floor_seconds_upper": floor,
                                 "note": "(draws - 1) forwards of every image for clean and each example, the whole "
                                         "batch each time: an upper bound of the floor (a cascade scores survivors "
                                         "only)", "scored": scored},
               "command": shlex.join(["python", *sys.argv])}
    path = write_results(f"scoring_cost-{a.model}-sigma{255 * a.sigma:g}", payload)
    for name, row in rows.items():
        print(name, row["total_seconds"], "s", {k: f"{v:.1f}" for k, v in row["worst_case"].items()})
    print(payload["ratios"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
