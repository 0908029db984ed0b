"""Corruption robustness of the zoo's SmallCNNs and of IG-Defense (issue 15's results).

Models: smallcnn-standard, smallcnn-robust, smallcnn-robust + IG-Defense (LO-IR, shipped rankings,
default k and sigma). Data: the CIFAR-10 (JPEG copy) test images, corrupted CIFAR-10-C-style (CIFAR
parameters, seed --seed), written once by igdefense.corruptions.write_dataset (what
`igdefense corruptions` writes) and read back with CorruptedCIFAR10.

1. Clean accuracy and accuracy on every corruption x severity 1..5 (on --n test images), the mean
   (RobustBench's protocol), and IG-Defense vs its base with paired intervals (per image: the
   fraction of its corrupted versions classified right).
2. The refinement paper's attack-on-corrupted table: FGSM and PGD (10 steps) at eps 0.01 on each
   corruption at severities 3 and 5, on --attack-n of those images (class-balanced). These are weak
   attacks, reported to compare with that paper; robustness claims need AutoAttack and the worst
   case (igdefense eval).

Everything is kept under --work (resumable). Writes benchmarks/results/corruptions_eval.{json,md,png}.

    python benchmarks/corruptions_eval.py [--n 10000] [--attack-n 1000] [--work runs/corruptions-eval]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from common import RESULTS, write_results

from igdefense import evaluate, zoo
from igdefense.atomic import atomic_path, atomic_write
from igdefense.corruptions import NAMES, CorruptedCIFAR10, write_dataset
from igdefense.data import CIFAR10, balanced_indices, cifar10_loader
from igdefense.defense import IGDefense
from igdefense.eval import AttackSettings, EvalResult
from igdefense.stats import paired_difference, paired_mean_difference

SEVERITIES = (1, 2, 3, 4, 5)
ATTACK_SEVERITIES = (3, 5)


def models() -> dict[str, torch.nn.Module]:
    robust = zoo.load("smallcnn-robust")
    return {"standard": zoo.load("smallcnn-standard"), "robust": robust,
            "robust+ig-defense": IGDefense(robust, zoo.rankings("smallcnn-robust"), seed=0).eval()}


def loader(root: Path, name: str, severity: int, rows: np.ndarray | None = None):
    from torch.utils.data import DataLoader, Subset

    from igdefense.images import collate

    data = CorruptedCIFAR10(root, name, severity)
    if rows is not None:
        data = Subset(data, rows.tolist())  # (Subset passes batches on to CorruptedCIFAR10.__getitems__)
    return DataLoader(data, batch_size=1000, collate_fn=collate)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10000, help="test images for the corruption accuracies")
    ap.add_argument("--attack-n", type=int, default=1000, help="test images for the attack-on-corrupted table")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default="runs/corruptions-eval")
    args = ap.parse_args()
    work = Path(args.work)
    nets = models()
    clean = CIFAR10("test")
    clean.indices = balanced_indices(clean.labels, per_class=args.n // 10)
    root = write_dataset(work / "cifar10-c", clean, seed=args.seed,
                         source=f"CIFAR-10 (JPEG copy) test, first {args.n // 10} per class")

    results = {}
    clean_loader = cifar10_loader("test", per_class=args.n // 10, batch_size=1000)
    for name, model in nets.items():
        correct = {"clean": evaluate(model, clean_loader, attacks=(), settings=AttackSettings(seed=args.seed),
                                     progress=False, log_path=work / name / "clean.jsonl").correct["clean"]}
        for c in tqdm(NAMES, desc=name):
            for s in SEVERITIES:
                correct[f"{c}@{s}"] = evaluate(model, loader(root, c, s), attacks=(),
                                               settings=AttackSettings(seed=args.seed), progress=False,
                                               log_path=work / name / f"{c}@{s}.jsonl").correct["clean"]
        results[name] = EvalResult(correct)

    labels = CorruptedCIFAR10(root, NAMES[0], 1).labels.numpy()
    rows = balanced_indices(labels, per_class=args.attack_n // 10)
    attacked: dict[str, dict[str, dict[str, float]]] = {m: {} for m in nets}
    for name, model in nets.items():
        for c in tqdm(NAMES, desc=f"{name}, FGSM/PGD on corrupted"):
            for s in ATTACK_SEVERITIES:
                r = evaluate(model, loader(root, c, s, rows), attacks=("fgsm", "pgd"),
                             settings=AttackSettings(eps=0.01, seed=args.seed),
                             log_path=work / name / f"attack-{c}@{s}.jsonl", progress=False)
                attacked[name][f"{c}@{s}"] = {"clean": 100 * r.clean_accuracy,
                                              **{k: 100 * v for k, v in r.robust_accuracy.items()}}

    summary = {m: {"clean": 100 * r.clean_accuracy, "mean_corruption": 100 * r.mean_corruption_accuracy,
                   "per_corruption": {c: {s: 100 * a for s, a in v.items()} for c, v in r.corruption_accuracy.items()}}
               for m, r in results.items()}
    base, defended = results["robust"], results["robust+ig-defense"]
    paired = {"clean": str(paired_difference(base.correct["clean"], defended.correct["clean"])),
              "mean_corruption": str(paired_mean_difference(base.corruption_per_image, defended.corruption_per_image))}
    for c in NAMES:
        keys = [f"{c}@{s}" for s in SEVERITIES]
        a = torch.stack([base.correct[k].float() for k in keys]).mean(0)
        b = torch.stack([defended.correct[k].float() for k in keys]).mean(0)
        paired[c] = str(paired_mean_difference(a, b))
    payload = {"data": f"CIFAR-10 (JPEG copy) test, first {args.n // 10} per class; CIFAR-10-C-style corruptions, "
                       f"CIFAR parameters, seed {args.seed}", "images": args.n, "attack_images": args.attack_n,
               "summary": summary, "ig_defense_minus_robust": paired, "attack_on_corrupted": attacked}
    write_results("corruptions_eval", payload)
    atomic_write(RESULTS / "corruptions_eval.md", report(payload))
    plot(summary, RESULTS / "corruptions_eval.png", f"{args.n:,} CIFAR-10 (JPEG copy) test images, seed {args.seed}")
    print(report(payload))


def report(p: dict) -> str:
    models = list(p["summary"])
    lines = [f"# Corruption robustness ({p['data']})", "",
             "Accuracy (%), mean over severities 1-5; last rows: clean and the mean over all 19 x 5.", "",
             "| corruption | " + " | ".join(models) + " | IG-Defense - robust (paired, 95% CI) |",
             "|---|" + "---|" * (len(models) + 1)]
    for c in NAMES:
        cells = [np.mean(list(p["summary"][m]["per_corruption"][c].values())) for m in models]
        lines.append(f"| {c} | " + " | ".join(f"{v:.2f}" for v in cells) + f" | {p['ig_defense_minus_robust'][c]} |")
    for key, label in (("mean_corruption", "**mean**"), ("clean", "clean")):
        lines.append(f"| {label} | " + " | ".join(f"{p['summary'][m][key]:.2f}" for m in models)
                     + f" | {p['ig_defense_minus_robust'][key]} |")
    lines += ["", f"## FGSM / PGD-10 at eps 0.01 on corrupted images ({p['attack_images']} images; weak attacks, "
                  "as the refinement paper reports them)", "",
              "| corruption@severity | " + " | ".join(f"{m} clean / FGSM / PGD" for m in models) + " |",
              "|---|" + "---|" * len(models)]
    for key in p["attack_on_corrupted"][models[0]]:
        cells = [p["attack_on_corrupted"][m][key] for m in models]
        lines.append(f"| {key} | " + " | ".join(f"{v['clean']:.1f} / {v['fgsm']:.1f} / {v['pgd']:.1f}" for v in cells)
                     + " |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path, data: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [*NAMES, "mean", "clean"]
    fig, ax = plt.subplots(figsize=(13, 4))
    width = 0.8 / len(summary)
    for i, (m, s) in enumerate(summary.items()):
        values = [np.mean(list(s["per_corruption"][c].values())) for c in NAMES] + [s["mean_corruption"], s["clean"]]
        ax.bar(np.arange(len(labels)) + (i - (len(summary) - 1) / 2) * width, values, width, label=m)
    ax.set_xticks(np.arange(len(labels)), [label.replace("_", " ") for label in labels], rotation=45, ha="right")
    ax.set_ylabel("accuracy (%), mean of severities 1-5")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(ncol=3, loc="upper right")
    ax.set_title(f"CIFAR-10-C-style corruptions (CIFAR parameters), {data}")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
