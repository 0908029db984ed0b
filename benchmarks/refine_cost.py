"""Cost of one refinement round over the full training split vs one FGSM-AT epoch, same model.

Per training batch (128 CIFAR-10 training images, smallcnn-standard in train mode, reference
smallcnn-robust), measured in the same run, alternating: the refinement step (sensitivity flags,
hidden + FGSM forward, double-backprop penalty, backward), an FGSM-RS training step (the zoo's
recipe), and the physical floor: one plain training step (forward + backward on clean images).
Per image: the attribution of a round (flag_spurious with LIME, 300 samples, 2 copies). A round
over the split = steps x refinement step + attribute_per_round x attribution per image.

    python benchmarks/refine_cost.py [--repeats 5] [--attribute 256]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import median_time, write_results  # noqa: E402

from igdefense import zoo  # noqa: E402
from igdefense.attribution import segment  # noqa: E402
from igdefense.attribution.segments import segment_counts  # noqa: E402
from igdefense.data import cifar10_loader  # noqa: E402
from igdefense.refine import flag_spurious, refinement_loss  # noqa: E402
from igdefense.attacks import fgsm_from_noise  # noqa: E402

TRAIN_IMAGES = 50_000 - 500  # the split minus the held-out images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--attribute", type=int, default=256, help="images attributed per round")
    ap.add_argument("--batch-size", type=int, default=128)
    args = ap.parse_args()
    model, reference = zoo.load("smallcnn-standard").train(), zoo.load("smallcnn-robust")
    x, y = next(iter(cifar10_loader("train", batch_size=args.batch_size, shuffle=True)))
    seg = segment(x)
    counts = segment_counts(seg)
    gen = torch.Generator().manual_seed(0)

    def refine_step():
        refinement_loss(model, x, y, seg, counts, reference=reference)[0].backward()

    def fgsm_rs_step():
        F.cross_entropy(model(fgsm_from_noise(model, x, y, 8 / 255, 10 / 255, gen)), y).backward()

    def plain_step():
        F.cross_entropy(model(x), y).backward()

    steps = {name: [] for name in ("refine", "fgsm_rs", "plain")}
    for _ in range(args.repeats):  # alternate, so all three see the same machine load
        steps["refine"].append(median_time(refine_step, 1, warmup=1))
        steps["fgsm_rs"].append(median_time(fgsm_rs_step, 1, warmup=1))
        steps["plain"].append(median_time(plain_step, 1, warmup=1))
    step = {k: sorted(v)[len(v) // 2] for k, v in steps.items()}
    model.eval()
    xa, ya, sa = x[:16], y[:16], seg[:16]
    t0 = time.perf_counter()
    flag_spurious(model, xa, ya, sa, reference=reference, num_samples=300, copies=2)
    attribution_per_image = (time.perf_counter() - t0) / len(xa)
    n_steps = TRAIN_IMAGES // args.batch_size
    fgsm_epoch = n_steps * step["fgsm_rs"]
    round_s = n_steps * step["refine"] + args.attribute * attribution_per_image
    payload = {"batch_size": args.batch_size, "step_seconds": step, "attribution_seconds_per_image":
               attribution_per_image, "attribute_per_round": args.attribute,
               "round_over_split_seconds": round_s, "fgsm_at_epoch_seconds": fgsm_epoch,
               "round_vs_fgsm_at_epoch": round_s / fgsm_epoch,
               "refine_step_vs_floor": step["refine"] / step["plain"],
               "fgsm_rs_step_vs_floor": step["fgsm_rs"] / step["plain"]}
    write_results("refine_cost", payload)
    for k, v in payload.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
