"""Write a zoo model's card (igdefense/zoo/weights/<name>.md) from its weights' metadata and the
measured results in benchmarks/results/zoo_<name>.json (written by benchmarks/zoo_card.py).

    python benchmarks/model_card.py smallcnn-robust ["note on the training time"]
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from safetensors import safe_open

from igdefense.zoo import WEIGHTS_DIR

RESULTS = Path(__file__).parent / "results"


def main(name: str, note: str = "") -> None:
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    with safe_open(str(weights), framework="pt") as f:
        meta = f.metadata()
        params = sum(f.get_tensor(k).numel() for k in f.keys() if not k.endswith(("running_mean", "running_var",
                                                                                   "num_batches_tracked")))
    cfg = json.loads(meta["config"])
    res = json.loads((RESULTS / f"zoo_{name}.json").read_text())
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()
    robust = cfg["robust"]
    precision = cfg.get("precision", "fp32")  # (files of before the precision policy were trained in float32)
    train_cmd = (f"igdefense train {'--robust ' if robust else ''}--epochs {cfg['epochs']} --seed {cfg['seed']} "
                 f"--precision {precision} -o {name}.safetensors")
    lines = [
        f"# {name}",
        "",
        f"A {params:,}-parameter CIFAR-10 CNN (`igdefense.zoo.models.SmallCNN`, widths {tuple(cfg['widths'])}: "
        "3x3 conv-BN-ReLU x2 per stage, max-pool, global average pool, linear head). Inputs (B,3,32,32) in [0,1], "
        "no normalisation layer.",
        "",
        "| | |",
        "|---|---|",
        "| data | CIFAR-10 (JPEG copy), 50,000 training images; random crop (pad 4) and flip |",
        f"| recipe | {'FGSM with random start (Wong et al. 2020), eps 8/255, step 10/255' if robust else 'standard cross-entropy training'}; "
        f"SGD Nesterov momentum 0.9, weight decay {cfg['weight_decay']}, one-cycle LR peak {cfg['lr_max']}, "
        f"batch {cfg['batch_size']}, {cfg['epochs']} epochs, seed {cfg['seed']} |",
        f"| command | `{train_cmd}` |",
        f"| training time | {int(meta['train_seconds'].split()[0]) / 60:.1f} min wall-clock on 2 CPU cores {' (' + note + ')' if note else ''} |",
        f"| sha256 | `{sha}` |",
        f"| clean accuracy, all 10,000 test images | {100 * res['clean_accuracy_test_10000']:.2f}% |",
    ]
    if "autoattack" in res:
        aa = res["autoattack"]
        p, n = aa["robust_accuracy"], aa["images"]
        half = 196 * (p * (1 - p) / n) ** 0.5  # 95% Wald interval, in points
        lines += [f"| AutoAttack (standard, L-inf {aa['eps'] * 255:.0f}/255), first {n // 10} test images "
                  f"per class ({n:,}) | {100 * p:.2f}% (95% interval +-{half:.1f} points; clean on those: "
                  f"{100 * aa['clean_accuracy']:.2f}%); the whole card's run took {res['seconds'] / 60:.0f} min |"]
    elif robust:
        lines += ["| AutoAttack (standard, L-inf 8/255) | not yet measured: run `python benchmarks/zoo_card.py "
                  f"--model {name}` |"]
    lines += ["", "Reproduce the numbers: `python benchmarks/zoo_card.py --model " + name +
              ("" if "autoattack" in res else " --no-autoattack") + "` (results: `benchmarks/results/zoo_" + name +
              ".json`). Numbers are on the JPEG copy of CIFAR-10 and are not comparable digit for digit with "
              "numbers on the original binary release.", ""]
    (WEIGHTS_DIR / f"{name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(*sys.argv[1:3])
