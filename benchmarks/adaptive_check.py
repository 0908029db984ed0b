"""Does a defense's worst-case gain survive every other attack we have?

An ``igdefense eval`` report's worst case covers the attacks it ran. This attacks every image the
defended model still gets right there with each stronger attack the report did not run (AutoAttack's
randomized version, EOT and BPDA white-box attacks, the other APGD losses, Square), in cascade, with
other random starts and noise draws (``--seed``). Only the defended model is attacked: the new attacks
can only lower its worst case, and the base model keeps its own from the report, so the paired gain
printed here is a conservative one. Logs go to runs/ (resumable); the summary to benchmarks/results/.

    python benchmarks/adaptive_check.py --eval benchmarks/results/eval_smallcnn-refined-sigma8-b1000
    python benchmarks/adaptive_check.py --eval benchmarks/results/eval_smallcnn-refined-sigma8-draws \
        --attacks adaptive --adaptive-start highest-loss   # IG-Defense's attack from another start
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import paired_row, print_table, write_results  # noqa: E402

from igdefense.cli import build_parser, specs  # noqa: E402
from igdefense.eval import EvalResult, evaluate  # noqa: E402
from igdefense.attacks import mask_aware_attack  # noqa: E402
from igdefense.attacks import ATTACKS, AttackSettings  # noqa: E402

WEAK = ("fgsm", "bim", "pgd")  # weaker than APGD: they add nothing to its worst case


def worst_case(report: dict, name: str) -> torch.Tensor:
    """Per image: right on the clean image and under every attack of the report (corruptions aside)."""
    correct = {k: torch.tensor(v, dtype=torch.bool) for k, v in report["per_image"][name].items()}
    return EvalResult(correct).worst_case


def highest_loss_start(model, x: torch.Tensor, y: torch.Tensor, s: AttackSettings) -> torch.Tensor:
    """APGD-CE's highest-loss point on ``model`` per image (its ``perturb`` hands back the clean image
    wherever it fails, which on a robust base model is every image that matters)."""
    from pyautoattack.autopgd_base import APGDAttack

    atk = APGDAttack(model, n_iter=s.n_iter, norm=s.norm, eps=s.eps, seed=s.seed, loss="ce", device=x.device)
    atk.init_hyperparam(x)
    torch.random.manual_seed(s.seed)
    return atk.attack_single_run(x.detach().float(), y)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--eval", type=Path, required=True, help="an `igdefense eval` report folder (report.json)")
    p.add_argument("--attacks", default=None, help="comma-separated (default: every stronger attack it did not run)")
    p.add_argument("--seed", type=int, default=None, help="attacks' and noise seed (default: the report's + 1)")
    p.add_argument("--adaptive-start", choices=("transfer", "highest-loss"), default="transfer",
                   help="the adaptive attack's second start: the base model's APGD-CE example (the library's; "
                        "the clean image where APGD-CE fails on the base) or APGD-CE's highest-loss point")
    a = p.parse_args()
    report = json.loads((a.eval / "report.json").read_text())
    args = build_parser().parse_args(shlex.split(report["run"]["command"])[1:])  # the eval's own options
    if args.func.__name__ != "cmd_eval":
        raise SystemExit(f"{a.eval} is not an `igdefense eval` report: its command is {report['run']['command']!r}")
    model_spec, data_spec, setting = specs(args)
    base = model_spec.load()
    rankings = setting.rankings_for(base, model_spec.name, data_spec)
    defense = setting.build(base, rankings, seed=args.seed)
    name = rankings.method
    loader, _ = data_spec.loader("test", args.n, batch_size=args.batch_size)
    x, y = (torch.cat(t) for t in zip(*loader))

    ran = report["attacks"]
    attacks = a.attacks.split(",") if a.attacks else [t for t in ATTACKS if t not in (*ran, *WEAK, "transfer")]
    seed = args.seed + 1 if a.seed is None else a.seed
    base_worst, worst = worst_case(report, "base"), worst_case(report, name)
    rows = [paired_row("eval (" + ", ".join(ran) + ")", "base", base_worst, "defended", worst)]
    alive = worst.nonzero().squeeze(1)
    # (base_model: the adaptive attack's transfer start, as in the eval; its draws: the eval's)
    settings = AttackSettings(eps=args.eps, seed=seed, eot_iter=args.eot_iter, draws=args.draws, base_model=base)
    if a.adaptive_start == "highest-loss":  # the defense names its own attack (RandomizedDefense protocol)
        defense.adaptive_attack = lambda xb, yb, s: mask_aware_attack(
            defense, xb, yb, s, transfer_start=highest_loss_start(base, xb, yb, s))
    start = "" if a.adaptive_start == "transfer" else f"-{a.adaptive_start}-start"
    log = Path("runs") / "adaptive_check" / a.eval.name / f"seed{seed}{start}.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    result = evaluate(defense, (x[alive], y[alive]), attacks, settings=settings, log_path=log, cascade=True,
                      desc=f"{name}: {len(alive)} images")
    fell = alive[~result.worst_case]
    worst[fell] = False
    rows.append({**paired_row(f"+ {', '.join(attacks)} (seed {seed})", "base", base_worst, "defended", worst),
                 "seconds": round(result.total_seconds)})
    path = write_results(f"adaptive_check-{a.eval.name}{start}", {
        "eval": str(a.eval), "defended": name, "images": len(y), "images_attacked": len(alive), "attacks": attacks,
        "survivors_after": {k: int(v.sum()) for k, v in result.correct.items()}, "fell": fell.tolist(),
        "rows": rows, "gained_images": (worst & ~base_worst).nonzero().squeeze(1).tolist()})
    print_table(rows, ["after", "base", "defended", "gained", "lost", "difference", "seconds"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
