"""The numbers of a zoo model's card: clean accuracy on the whole CIFAR-10 (JPEG copy) test set
and AutoAttack (standard, L-inf) on the first N test images of each class.

Resumable: per-batch results go to a JSONL log in the cache dir; re-running continues. The
adversarial examples are kept in the cache too: `igdefense eval` with the same images and batch
size reuses them (base-model row and transfer source) instead of running AutoAttack again.

    python benchmarks/zoo_card.py --model smallcnn-robust --per-class 100
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, write_results  # noqa: E402

from igdefense import zoo  # noqa: E402
from igdefense.data import cache_dir, cifar10_loader  # noqa: E402
from igdefense.eval import AttackSettings, evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", required=True, choices=zoo.available())
    ap.add_argument("--per-class", type=int, default=100, help="AutoAttack images per class (default 100)")
    ap.add_argument("--eps", type=float, default=8 / 255)
    ap.add_argument("--batch-size", type=int, default=250, help="AutoAttack batch (large batches are far faster on CPUs)")
    ap.add_argument("--no-autoattack", action="store_true", help="clean accuracy only")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model = zoo.load(args.model)

    t0 = time.time()
    clean = evaluate(model, cifar10_loader("test", batch_size=500), attacks=(), desc="clean, 10k")
    row = {"model": args.model, "clean_10k": round(100 * clean.clean_accuracy, 2)}
    payload = {"model": args.model, "clean_accuracy_test_10000": clean.clean_accuracy}
    if not args.no_autoattack:
        n = 10 * args.per_class
        log = cache_dir() / "logs" / f"zoo_card_{args.model}_aa{n}.jsonl"
        aa = evaluate(model, cifar10_loader("test", per_class=args.per_class, batch_size=args.batch_size),
                      attacks=["autoattack"], settings=AttackSettings(eps=args.eps, cache=cache_dir() / "adversarial"),
                      log_path=log, desc=f"AutoAttack, {n}")  # reused as transfer source by `igdefense eval`
        row.update({f"clean_{n}": round(100 * aa.clean_accuracy, 2),
                    f"autoattack_{n}": round(100 * aa.robust_accuracy["autoattack"], 2)})
        payload.update({"autoattack": {"images": n, "eps": args.eps, "norm": "Linf", "version": "standard",
                                       "clean_accuracy": aa.clean_accuracy,
                                       "robust_accuracy": aa.robust_accuracy["autoattack"]}})
    payload["seconds"] = round(time.time() - t0)
    print_table([row], list(row))
    write_results(f"zoo_{args.model}", payload)


if __name__ == "__main__":
    main()
