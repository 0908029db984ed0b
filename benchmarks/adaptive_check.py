"""Does a defense's worst-case gain survive every other attack we have?

An ``igdefense eval`` report's worst case covers the attacks it ran. This attacks every image the
defended model still gets right there with each stronger attack the report did not run (AutoAttack's
randomized version, EOT and BPDA white-box attacks, the other APGD losses, Square), in cascade, with
other random starts and noise draws (``--seed``). Only the defended model is attacked: the new attacks
can only lower its worst case, and the base model keeps its own from the report, so the paired gain
printed here is a conservative one. Logs go to runs/ (resumable); the summary to benchmarks/results/.

    python benchmarks/adaptive_check.py --eval benchmarks/results/eval_smallcnn-refined-sigma8-b1000
    python benchmarks/adaptive_check.py --eval benchmarks/results/eval_smallcnn-refined-sigma8-b1000 \
        --attacks autoattack-rand,square --batch-size 20   # the rest, in pieces a stop does not lose
    python benchmarks/adaptive_check.py --eval benchmarks/results/eval_smallcnn-refined-sigma8-draws \
        --attacks adaptive --adaptive-start highest-loss   # IG-Defense's attack from another start
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, recorded_run, write_results  # noqa: E402

from igdefense.attacks import ATTACKS, AttackSettings, mask_aware_attack  # noqa: E402
from igdefense.eval import EvalResult  # noqa: E402
from igdefense.eval.survivors import attack_survivors  # noqa: E402
from igdefense.stats import paired_row  # noqa: E402

WEAK = ("fgsm", "bim", "pgd")  # weaker than APGD: they add nothing to its worst case


def finished(report: dict, name: str) -> EvalResult:
    """The report's per-image results of ``name``."""
    return EvalResult({k: torch.tensor(v, dtype=torch.bool) for k, v in report["per_image"][name].items()})


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
    p.add_argument("--batch-size", type=int, default=None,
                   help="survivors per logged batch (default: all in one); a stopped run keeps the batches it finished")
    a = p.parse_args()
    report = json.loads((a.eval / "report.json").read_text())
    run = recorded_run(a.eval, "eval")
    base = run.model.load()
    rankings = run.defense.rankings_for(base, run.model.name, run.data)
    defense = run.defense.build(base, rankings, seed=run.settings.seed)
    name = rankings.method
    loader, data = run.data.loader("test", run.n, batch_size=run.batch_size)

    ran = report["attacks"]
    attacks = a.attacks.split(",") if a.attacks else [t for t in ATTACKS if t not in (*ran, *WEAK, "transfer")]
    seed = run.settings.seed + 1 if a.seed is None else a.seed
    base_worst, done = finished(report, "base").worst_case, finished(report, name)
    rows = [paired_row("eval (" + ", ".join(ran) + ")", "base", base_worst, "defended", done.worst_case)]
    # (base_model: the adaptive attack's transfer start, as in the eval; its draws: the eval's)
    settings = dataclasses.replace(run.settings, seed=seed, base_model=base)
    if a.adaptive_start == "highest-loss":  # the defense names its own attack (RandomizedDefense protocol)
        defense.adaptive_attack = lambda xb, yb, s: mask_aware_attack(
            defense, xb, yb, s, transfer_start=highest_loss_start(base, xb, yb, s))
    start = "" if a.adaptive_start == "transfer" else f"-{a.adaptive_start}-start"
    chunks = "" if a.batch_size is None else f"-b{a.batch_size}"
    log = Path("runs") / "adaptive_check" / a.eval.name / f"seed{seed}{start}{chunks}.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    worst, result = attack_survivors(defense, done, loader, attacks, settings, log_path=log, batch_size=a.batch_size)
    fell = (done.worst_case & ~worst).nonzero().squeeze(1)
    rows.append({**paired_row(f"+ {', '.join(attacks)} (seed {seed})", "base", base_worst, "defended", worst),
                 "seconds": round(result.total_seconds)})
    path = write_results(f"adaptive_check-{a.eval.name}{start}", {
        "eval": str(a.eval), "defended": name, "images": len(data), "images_attacked": int(done.worst_case.sum()),
        "attacks": attacks,
        "survivors_after": {k: int(v.sum()) for k, v in result.correct.items()}, "fell": fell.tolist(),
        "rows": rows, "gained_images": (worst & ~base_worst).nonzero().squeeze(1).tolist()})
    print_table(rows, ["after", "base", "defended", "gained", "lost", "difference", "seconds"])
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
