"""Draws docs/img/ig-defense.png: IG-Defense's two passes on a real CIFAR-10 test image, with the
shipped smallcnn-robust model and its LO-IR rankings (the values shown are the model's own).

    python docs/figures/ig_defense.py
"""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import igdefense  # noqa: E402
from igdefense.data import CIFAR10_CLASSES  # noqa: E402

OUT = Path(__file__).resolve().parents[1] / "img" / "ig-defense.png"


def main() -> None:
    model = igdefense.zoo.load("smallcnn-robust")
    defended = igdefense.wrap(model, igdefense.zoo.rankings("smallcnn-robust"), seed=0)
    loader, _ = igdefense.DataSpec().loader("test", 10, batch_size=10)
    images, labels = next(iter(loader))
    x, y = images[3:4], int(labels[3])  # (one image of class 3)
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(0)) * defended.sigma
    with torch.no_grad():
        pseudo = torch.softmax(model(x + noise) / defended.tau, 1)[0]
        mask = defended.mask(x, noise)[0]
        logits = defended(x, noise)[0]
    names = list(CIFAR10_CLASSES)
    fig, ax = plt.subplots(1, 5, figsize=(16, 3.4), gridspec_kw={"width_ratios": [1, 1, 1.6, 2.2, 1.6]})
    ax[0].imshow(x[0].permute(1, 2, 0))
    ax[0].set_title(f"input ({names[y]})")
    ax[1].imshow((x + noise)[0].clamp(0, 1).permute(1, 2, 0))
    ax[1].set_title(f"pass 1: input + noise\n(std {255 * defended.sigma:g}/255)")
    ax[2].barh(names, pseudo, color="tab:orange")
    ax[2].set_title("pass 1's pseudo-label\np = softmax(logits / 0.01)")
    ax[2].invert_yaxis()
    ax[3].imshow(mask[None].repeat(8, 1), cmap="Greys", aspect="auto", vmin=0, vmax=1)
    ax[3].set_yticks([])
    ax[3].set_xlabel(f"{len(mask)} penultimate neurons")
    ax[3].set_title(f"mask m = p @ M\n({int((mask > 0.5).sum())} neurons of the class kept)")
    ax[4].barh(names, torch.softmax(logits, 0), color="tab:blue")
    ax[4].set_title("pass 2: clean input,\nfeatures x m")
    ax[4].set_xlabel("softmax of the answer")
    ax[4].invert_yaxis()
    for a in ax[:2]:
        a.axis("off")
    fig.tight_layout(w_pad=4)
    for a, b, start in zip(ax[:-1], ax[1:], (1.02, 1.02, 1.02, 1.02)):
        end = -0.45 if b in (ax[2], ax[4]) else -0.05  # (left of the class names)
        fig.add_artist(matplotlib.patches.ConnectionPatch((start, 0.5), (end, 0.5), "axes fraction", "axes fraction",
                                                          axesA=a, axesB=b, arrowstyle="->", color="grey"))
    OUT.parent.mkdir(exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
