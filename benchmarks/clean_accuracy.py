"""Clean accuracy of a model and its IG-defended version on CIFAR-10 (JPEG copy) test images
and on foolbox's 20 lossless CIFAR-10 test images.

    python benchmarks/clean_accuracy.py --model pyautoattack-resnet18 --probe-per-class 200 --k 50
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, write_results  # noqa: E402

import igdefense  # noqa: E402
from igdefense import zoo  # noqa: E402
from igdefense.data import CIFAR10_CLASSES, cifar10_loader, foolbox_cifar10  # noqa: E402
from igdefense.eval.evaluate import evaluate  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="pyautoattack-resnet18", choices=zoo.available())
    ap.add_argument("--probe-per-class", type=int, default=200)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--k", type=int, default=50)
    ap.add_argument("--sigma", type=float, default=4 / 255)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(2)

    model = zoo.load(args.model)
    probe = cifar10_loader("train", per_class=args.probe_per_class, batch_size=250)
    rankings = igdefense.lo_ir(model, probe, class_names=CIFAR10_CLASSES,
                               probe=f"CIFAR-10 (JPEG copy) train, first {args.probe_per_class} per class")
    defended = igdefense.wrap(model, rankings, k=args.k, sigma=args.sigma, seed=args.seed)
    test = cifar10_loader("test", per_class=args.test_per_class, batch_size=250)
    fb = foolbox_cifar10()
    rows = []
    for label, m in (("undefended", model), ("defended", defended)):
        jpeg = evaluate(m, test, attacks=(), desc=label)
        lossless = evaluate(m, fb, attacks=(), progress=False)
        rows.append({"model": label, f"jpeg_test_{10 * args.test_per_class}": round(100 * jpeg.clean_accuracy, 2),
                     "foolbox_20": round(100 * lossless.clean_accuracy, 2)})
    print(f"\n{args.model}: LO-IR on {10 * args.probe_per_class} training images, k={args.k}/"
          f"{rankings.num_neurons}, sigma={args.sigma * 255:.1f}/255, seed {args.seed}; clean accuracy (%)")
    print_table(rows, list(rows[0]))
    write_results(f"clean_accuracy_{args.model}", {
        "settings": {"probe_per_class": args.probe_per_class, "test_per_class": args.test_per_class,
                     "k": args.k, "neurons": rankings.num_neurons, "sigma": args.sigma, "seed": args.seed,
                     "data": "CIFAR-10 (JPEG copy) test, first images of each class; foolbox 3.3.4 lossless"},
        "clean_accuracy_percent": rows})


if __name__ == "__main__":
    main()
