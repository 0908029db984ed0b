"""Time and peak memory of computing rankings on the same probe set: CD-IR (open_clip ViT-B-16,
randomly initialised here: same compute as the pretrained weights, which cannot be downloaded
offline) vs LO-IR closed form vs LO-IR per-neuron ablation (one full probe pass per neuron, as
the original release does it). Model: pyautoattack's CIFAR-10 ResNet-18 (512 neurons).

    python benchmarks/ranking_time.py [--per-class 10] [--skip-per-neuron]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import peak_rss_mb, print_table, run_worker, write_results  # noqa: E402


def worker(method: str, per_class: int) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import igdefense
    from igdefense import zoo
    from igdefense.data import CIFAR10_CLASSES, cifar10_loader

    model = zoo.load("pyautoattack-resnet18")
    loader = cifar10_loader("train", per_class=per_class, batch_size=50)
    t = time.perf_counter()
    if method == "cd-ir":
        igdefense.cd_ir(model, loader, CIFAR10_CLASSES, clip="ViT-B-16", pretrained=None, progress=False)
    elif method == "lo-ir-closed":
        igdefense.lo_ir(model, loader, mode="closed", progress=False)
    else:
        igdefense.lo_ir(model, loader, mode="ablation", neuron_batch=1, progress=False)
    return {"seconds": time.perf_counter() - t, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=10)
    ap.add_argument("--skip-per-neuron", action="store_true")
    ap.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    methods = ["lo-ir-closed", "cd-ir"] + ([] if args.skip_per_neuron else ["lo-ir-per-neuron"])
    rows = []
    for method in methods:
        r = run_worker(__file__, [method, str(args.per_class)])
        rows.append({"method": method, "probe_images": 10 * args.per_class, "seconds": round(r["seconds"], 2),
                     "peak_mb": round(r["peak_rss_mb"])})
        print_table(rows[-1:], list(rows[-1]))
    base = rows[0]["seconds"]
    for r in rows:
        r["vs_lo_ir_closed"] = round(r["seconds"] / base, 1)
    print("\nRankings for pyautoattack's ResNet-18, same probe set (CIFAR-10 JPEG copy train):")
    print_table(rows, list(rows[0]))
    print("wrote", write_results("ranking_time", {"rows": rows}))


if __name__ == "__main__":
    main()
