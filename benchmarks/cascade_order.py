"""What running the transfer attack first saves in a cascade (issue 17, part 5).

The committed 1,000-image table (benchmarks/results/eval_smallcnn-robust) ran, per defended model,
AutoAttack on every image, then the transfer from the base model, then APGD-CE-EOT and RayS on the
survivors. The transfer's examples are on disk (crafted once on the base model), so running it first
lets the expensive white-box attacks see only its survivors. Measured here on the table's defended row
(smallcnn-robust + IG-Defense, LO-IR, paper defaults; its attacks and budgets), on the first --n
test images (class-balanced, one batch), each variant in a fresh process on the same machine:

- before: the code at --before (a git revision; attacks in the given order),
- after: this checkout (transfer first),
- floor: the white-box attacks on only the images that survive everything (every attack has to
  confirm each robust image: no order can spend less on them).

The base model's examples (transfer sources) are computed first and cached, untimed, as the table's
base row leaves them. Writes benchmarks/results/cascade_order.json.

    python benchmarks/cascade_order.py [--n 100] [--before 9a6956a]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from igdefense.atomic import atomic_write

ATTACKS = ["autoattack", "transfer", "apgd-ce-eot", "rays"]  # the committed table's


def _setup(n: int, work: Path):
    import torch

    from igdefense import zoo
    from igdefense.data import cifar10_loader
    from igdefense.defense import IGDefense
    from igdefense.eval import AttackSettings

    torch.manual_seed(0)
    base = zoo.load("smallcnn-robust")
    defended = IGDefense(base, zoo.rankings("smallcnn-robust"), seed=0).eval()
    x, y = next(iter(cifar10_loader("test", per_class=n // 10, batch_size=n)))
    settings = AttackSettings(eps=8 / 255, seed=0, eot_iter=20, cache=work / "adversarial", base_model=base)
    return base, defended, x, y, settings


def worker(args) -> None:
    """One timed variant, in this process; prints a JSON line."""
    from igdefense.eval import evaluate

    base, defended, x, y, settings = _setup(args.n, Path(args.work))
    attacks = ATTACKS
    if args.only:  # the floor: white-box attacks on the given images only
        keep = json.loads(Path(args.only).read_text())
        x, y, attacks = x[keep], y[keep], [a for a in ATTACKS if a != "transfer"]
    start = time.perf_counter()
    r = evaluate(defended, (x, y), attacks=attacks, settings=settings, cascade=True, progress=False)
    print(json.dumps({"seconds": time.perf_counter() - start, "worst_case": r.worst_case.int().tolist(),
                      "columns": {k: v.float().mean().item() for k, v in r.correct.items()},
                      "order": list(r.correct)}))


def _run(label: str, code: Path, args, extra: list[str] = ()) -> dict:
    """A variant's measurement, kept in --work: a rerun after a kill measures only what is missing."""
    done = Path(args.work) / f"{label}-{args.n}.json"
    if done.exists():
        return json.loads(done.read_text())
    env = {**os.environ, "PYTHONPATH": str(code)}
    out = subprocess.run([sys.executable, __file__, "--worker", "--n", str(args.n), "--work", args.work, *extra],
                         env=env, check=True, capture_output=True, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    atomic_write(done, json.dumps(result))  # a kill mid-write must not leave a half file that reads as done
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100, help="test images (class-balanced, one batch)")
    ap.add_argument("--before", default="9a6956a", help="git revision of the given-order cascade")
    ap.add_argument("--work", default="runs/cascade-order", help="attack cache (the base model's examples)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--only", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    sys.path.insert(0, str(Path(__file__).parent))
    from common import write_results

    import torch
    from igdefense.eval import evaluate, stats

    repo = Path(__file__).resolve().parent.parent
    base, _, x, y, settings = _setup(args.n, Path(args.work))
    evaluate(base, (x, y), attacks=["transfer"], settings=settings, desc="base model's examples (cached, untimed)")
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", str(old), args.before], check=True,
                       capture_output=True)
        try:
            before = _run("before", old, args)
        finally:
            subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(old)], check=True)
        after = _run("after", repo, args)
        survivors = [i for i, ok in enumerate(after["worst_case"]) if ok]
        (Path(tmp) / "keep.json").write_text(json.dumps(survivors))
        floor = _run("floor", repo, args, ["--only", str(Path(tmp) / "keep.json")]) if survivors else {"seconds": 0}
    diff = stats.paired_difference(torch.tensor(before["worst_case"], dtype=torch.bool),
                                   torch.tensor(after["worst_case"], dtype=torch.bool))
    payload = {"images": args.n, "attacks": ATTACKS, "model": "smallcnn-robust + IG-Defense (LO-IR, defaults)",
               "before_revision": args.before, "before": before, "after": after, "floor_seconds": floor["seconds"],
               "floor_images": len(survivors),
               "speedup_after_vs_before": before["seconds"] / after["seconds"],
               "after_vs_floor": after["seconds"] / max(floor["seconds"], 1e-9),
               "worst_case_after_minus_before": vars(diff)}
    path = write_results("cascade_order", payload)
    print(f"before {before['seconds']:.0f} s, after {after['seconds']:.0f} s "
          f"({payload['speedup_after_vs_before']:.2f}x faster), floor {floor['seconds']:.0f} s "
          f"(after = {payload['after_vs_floor']:.2f}x the floor); worst case after - before: {diff}\nwrote {path}")


if __name__ == "__main__":
    main()
