"""How the flag quantile was chosen: a deletion test of each criterion's flags at several quantiles.

On --n training images (class-balanced), with smallcnn-standard refined against smallcnn-robust
(the experiment's models), each criterion flags superpixels at quantile q. Hiding a flagged set
(mean colour) should hurt the model (it relies on those superpixels) and not the reference (they
are not needed): we report, per criterion and q, the mean drop of the true-class probability for
each model when the flags are hidden, the same for as many random superpixels per image, and the
superpixels flagged per image. Scores are computed once; only the thresholds vary. Also writes
the explain-why figure of the first images at the chosen quantile.

    python benchmarks/refine_flags.py [--n 50] [--num-samples 300]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, print_table, write_results  # noqa: E402

from igdefense import zoo  # noqa: E402
from igdefense.attribution import attribute, hidden_fill, segment  # noqa: E402
from igdefense.attribution.segments import segment_counts  # noqa: E402
from igdefense.data import CIFAR10_CLASSES, cifar10_loader  # noqa: E402
from igdefense.refine import Flags  # noqa: E402
from igdefense.refine.figure import plot_flags  # noqa: E402
from igdefense.refine.flags import high, unsupported  # noqa: E402

QUANTILES = (0.5, 0.7, 0.8, 0.9)


def _probability(model, x, y):
    with torch.no_grad():
        return torch.softmax(model(x), 1).gather(1, y[:, None]).squeeze(1)


def _drop(model, x, y, seg, mask):
    hidden = torch.where(mask.gather(1, seg.flatten(1)).view(len(x), 1, *x.shape[2:]), hidden_fill(x, seg), x)
    return (_probability(model, x, y) - _probability(model, hidden, y)).mean().item()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--num-samples", type=int, default=300)
    args = ap.parse_args()
    model, reference = zoo.load("smallcnn-standard"), zoo.load("smallcnn-robust")
    x, y = next(iter(cifar10_loader("train", per_class=args.n // 10, batch_size=args.n)))
    seg = segment(x)
    counts = segment_counts(seg)
    kw = dict(num_samples=args.num_samples, seed=0)
    beta = attribute(model, x, seg, y, **kw)
    beta_ref = attribute(reference, x, seg, y, **kw)
    sal, sal_ref = (attribute(m, x, seg, y, method="saliency") for m in (model, reference))
    gen = torch.Generator().manual_seed(0)
    copies = [attribute(model, (x + (torch.rand(x.shape, generator=gen) * 2 - 1) * 8 / 255).clamp(0, 1), seg, y, **kw)
              for _ in range(2)]
    variance = torch.stack([beta, *copies]).var(0)
    rows, chosen = [], {}
    for q in QUANTILES:
        flags = Flags(unsupported(beta.abs(), beta_ref.abs(), counts, q), unsupported(sal, sal_ref, counts, q),
                      high(variance, counts, q))
        chosen[q] = flags
        for name in ("irrelevance", "sensitivity", "instability"):
            mask = getattr(flags, name)
            # as many random superpixels per image, drawn among the image's own
            scores = torch.rand(mask.shape, generator=gen).masked_fill(
                torch.arange(mask.shape[1])[None] >= counts[:, None], -1)
            random = torch.zeros_like(mask)
            for b, k in enumerate(mask.sum(1).tolist()):
                random[b, scores[b].topk(k).indices] = True
            rows.append({"quantile": q, "criterion": name,
                         "flagged_per_image": round(mask.sum(1).float().mean().item(), 2),
                         "model_drop": round(_drop(model, x, y, seg, mask), 4),
                         "reference_drop": round(_drop(reference, x, y, seg, mask), 4),
                         "model_drop_random": round(_drop(model, x, y, seg, random), 4),
                         "reference_drop_random": round(_drop(reference, x, y, seg, random), 4)})
    print_table(rows, list(rows[0]))
    write_results("refine_flags", {"n": args.n, "num_samples": args.num_samples, "rows": rows})
    pick = torch.arange(0, len(x), max(1, len(x) // 6))[:6]  # one image from each of 6 classes
    plot_flags(x[pick], seg[pick], Flags(*(getattr(chosen[0.8], c)[pick] for c in ("irrelevance", "sensitivity",
                                                                                "instability"))),
               RESULTS / "refine_flags.png", titles=[CIFAR10_CLASSES[int(c)] for c in y[pick]])


if __name__ == "__main__":
    main()
