"""What training in bfloat16 changes: the zoo's smallcnn-robust recipe (FGSM-RS, 10 epochs, seed 0) run
again under ``--precision bf16``, against the committed float32 weights, on the first 100 CIFAR-10
(JPEG copy) test images per class: clean and PGD-10 (8/255, step 2/255, random start) accuracy, both
judged in float32, with the paired difference and its 95% interval. Training resumes from its
checkpoint in ``--work``.

    python benchmarks/precision_train.py      # ~15 min on 2 cores with AVX512-BF16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, write_results  # noqa: E402

from igdefense import zoo  # noqa: E402
from igdefense.data import cifar10_loader  # noqa: E402
from igdefense.stats import paired_row  # noqa: E402
from igdefense.eval import evaluate  # noqa: E402
from igdefense.train import TrainConfig, train  # noqa: E402
from igdefense.zoo.weights_file import load_weights  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="runs/precision_train")
    ap.add_argument("--per-class", type=int, default=100)
    args = ap.parse_args()
    torch.set_num_threads(2)
    from safetensors import safe_open

    with safe_open(str(zoo.WEIGHTS_DIR / "smallcnn-robust.safetensors"), "pt") as f:
        config = json.loads(f.metadata()["config"])
    cfg = TrainConfig(**{**config, "widths": tuple(config["widths"]), "precision": "bf16"})
    out = Path(args.work) / "smallcnn-robust-bf16.safetensors"
    t0 = time.perf_counter()
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        train(cfg, out)
    seconds = time.perf_counter() - t0
    loader = cifar10_loader("test", per_class=args.per_class, batch_size=500)
    results = {name: evaluate(model, loader, attacks=["pgd"], desc=name)
               for name, model in (("fp32", zoo.load("smallcnn-robust")), ("bf16", load_weights(out)))}
    rows = [paired_row(step, "fp32", results["fp32"].correct[step], "bf16", results["bf16"].correct[step])
            for step in ("clean", "pgd")]
    print_table(rows, ["after", "fp32", "bf16", "gained", "lost", "difference"])
    path = write_results("precision_train", {
        "recipe": {**config, "precision": "bf16 (the committed weights: fp32)"}, "images": 10 * args.per_class,
        "train_seconds_this_run": round(seconds), "rows": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()
