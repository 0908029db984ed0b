"""Are attacks crafted under bfloat16 autocast as strong as in float32? The proof the precision policy
needs before bfloat16 crafting may evaluate a model (``AttackSettings.precision``).

On the same class-balanced CIFAR-10 test images (JPEG copy), APGD-CE and APGD-T on the model, and
APGD-CE, APGD-T and IG-Defense's own adaptive attack on IG-Defense around it (k: the zoo's setting
for the model, the paper's 50 of 512 for the ResNet-18, else 10% of the neurons; sigma 4/255;
scored over 9 draws, majority rule), each crafted once in float32 and once in bfloat16; every
example is judged in float32 either way. Per attack: the paired difference bf16 - fp32 of robust
accuracy with its 95% interval. bfloat16 crafting is as strong where that interval does not lie
above 0 (it would then leave more images standing: weaker); a model passes only if every attack
does. Every attack runs on every image (no cascade), from logs in ``--work`` (resumable).

    python benchmarks/precision_strength.py --model smallcnn-robust              # ~10 min on 2 cores
    python benchmarks/precision_strength.py --model preact-resnet18-robust --batch-size 50   # ~8 h on 2 cores
    python benchmarks/precision_strength.py --checkpoint M.safetensors.ckpt --label resnet18-epoch5
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, print_table, write_results  # noqa: E402

import igdefense  # noqa: E402
from igdefense.data import cifar10_loader  # noqa: E402
from igdefense.eval import AttackSettings, evaluate  # noqa: E402
from igdefense.specs import DefenseSpec  # noqa: E402
from igdefense.stats import paired_difference  # noqa: E402

PRECISIONS = ("fp32", "bf16")


def load(args) -> tuple[torch.nn.Module, str]:
    """The model and what it is: a name or file (``--model``), or a training checkpoint's last epoch."""
    if args.checkpoint is None:
        from igdefense.models import load_model

        return load_model(args.model), args.model
    from igdefense.train import load_checkpoint

    model, epoch, config = load_checkpoint(args.checkpoint)
    return model, f"{args.checkpoint} after epoch {epoch} of {config.epochs}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smallcnn-robust", help="a zoo name or a file igdefense train wrote")
    ap.add_argument("--checkpoint", help="instead: the last epoch of a training checkpoint (OUT.ckpt)")
    ap.add_argument("--label", default=None, help="names the JSON (default: the model's name)")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="images per logged step (default: all in one); smaller resumes a cut run from nearer where it stopped")
    ap.add_argument("--probe-per-class", type=int, default=50, help="LO-IR probe images per class (non-zoo models)")
    ap.add_argument("--work", default="runs/precision_strength")
    args = ap.parse_args()
    torch.set_num_threads(2)
    model, what = load(args)
    label = args.label or Path(args.model).stem
    work = Path(args.work) / label
    setting = DefenseSpec(sigma=4 / 255)  # the paper's (k: 10% of the neurons), unless the zoo ships one
    if args.checkpoint is None and args.model in igdefense.zoo.with_rankings():
        rankings = igdefense.zoo.rankings(args.model)
        setting = dataclasses.replace(DefenseSpec.for_model(args.model), sigma=4 / 255)
    else:
        rankings = igdefense.lo_ir(model, cifar10_loader("train", per_class=args.probe_per_class, batch_size=250))
    defended = setting.build(model, rankings)
    loader = cifar10_loader("test", per_class=args.images // 10, batch_size=args.batch_size or args.images)
    models = {"base": (model, ["apgd-ce", "apgd-t"]), "ig-defense": (defended, ["apgd-ce", "apgd-t", "adaptive"])}
    results = {}
    for name, (m, attacks) in models.items():
        for p in PRECISIONS:
            settings = AttackSettings(precision=p, base_model=model)
            results[name, p] = evaluate(m, loader, attacks=attacks, settings=settings,
                                        log_path=work / f"{name}-{p}.jsonl", desc=f"{name}, crafted in {p}")
    rows = []
    for name, (_, attacks) in models.items():
        fp32, bf16 = results[name, "fp32"], results[name, "bf16"]
        for attack in attacks:
            d = paired_difference(fp32.correct[attack], bf16.correct[attack])
            rows.append({"model": name, "attack": attack,
                         "fp32": round(100 * fp32.correct[attack].float().mean().item(), 1),
                         "bf16": round(100 * bf16.correct[attack].float().mean().item(), 1),
                         "bf16_minus_fp32": f"{100 * d.difference:+.1f} [{100 * d.low:+.2f}, {100 * d.high:+.2f}]",
                         "fp32_only": d.a_only, "bf16_only": d.b_only,
                         "as_strong": d.low <= 0,
                         "seconds_fp32": round(fp32.seconds.get(attack, 0), 1),
                         "seconds_bf16": round(bf16.seconds.get(attack, 0), 1)})
    print_table(rows, [c for c in rows[0] if not c.startswith("seconds")])
    passes = all(r["as_strong"] for r in rows)
    print(f"{what}: bfloat16 crafting is {'as strong as float32 on every attack' if passes else 'WEAKER'} "
          f"({args.images} images)")
    path = write_results(f"precision_strength-{label}", {
        "model": what, "images": args.images, "defense": {"k": defended.k, "sigma": defended.sigma, "draws": 9,
                                                          "rule": "majority"},
        "clean": {name: round(100 * results[name, "fp32"].clean_accuracy, 1) for name in models},
        "bf16_as_strong": passes, "rows": rows})
    print("wrote", path.relative_to(RESULTS.parent.parent))


if __name__ == "__main__":
    main()
