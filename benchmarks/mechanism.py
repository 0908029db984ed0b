"""Why IG-Defense does, or does not, undo an attack: its mechanism measured per image (issue 54, step 4).

The paper's account: an attack shifts the penultimate activations onto the neurons important to the
wrong class; pass 1 still names the true class, and its mask removes the shift. Each link is measured
here, on the examples that fool the base model, for two sources of examples: APGD-CE crafted on the
base model (the examples the paper's account is about) and IG-Defense's own adaptive attack crafted
on the defense (the examples an honest evaluation meets). Per example, over ``--draws`` noise draws:

- pass 1's label (the pseudo-label) under attack: the true class, the base's adversarial class, or another;
- the defended prediction: right under the majority of draws?
- the mask fixed to the true class's important neurons (pass 1 made right by an oracle), or to the
  adversarial class's: is the prediction right? (what the mask can do, apart from pass 1's choice);
- the feature shift d = f(x_adv) - f(x) at the masked layer: the share of its increase on the true
  class's k important neurons and on the adversarial class's (k / neurons if it fell at random), and
  the share of |d| the applied mask removes.

    python benchmarks/mechanism.py --model smallcnn-robust --images 200
    python benchmarks/mechanism.py --model preact-resnet18-robust --images 200 --sources base   # ~10 min
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, print_table, write_results  # noqa: E402

from igdefense import zoo  # noqa: E402
from igdefense.attacks import AttackSettings, mask_aware_attack, run_attack  # noqa: E402
from igdefense.data import cifar10_loader  # noqa: E402
from igdefense.specs import DefenseSpec  # noqa: E402

SOURCES = {"base": "APGD-CE on the base model", "adaptive": "IG-Defense's adaptive attack on the defense"}


def features(defended, x: torch.Tensor) -> torch.Tensor:
    """The base model's activations at the masked site (B, neurons): what the mask multiplies."""
    captured = []
    handle = defended.split.site.register(defended.model, lambda f: captured.append(f.detach()) or f)
    try:
        defended.model(x)
    finally:
        handle.remove()
    f = captured[0]
    return f.flatten(2).mean(2) if f.ndim == 4 else f  # (a conv site: its channels, averaged over H, W)


def measure(defended, x, x_adv, y, draws: int, seed: int) -> dict[str, torch.Tensor]:
    """Per-example measurements (see the module's docstring) for adversarial examples ``x_adv`` of (x, y)."""
    model, masks = defended.model, defended.class_masks.float()
    adv_class = model(x_adv).argmax(1)
    gen = torch.Generator().manual_seed(seed)
    pseudo, right, removed = [], [], []
    delta = features(defended, x_adv) - features(defended, x)
    for _ in range(draws):
        noise = torch.randn((1, *x.shape), generator=gen) * defended.sigma
        pseudo.append(model(x_adv + noise[0]).argmax(1))
        right.append(defended(x_adv, noise).argmax(1) == y)
        removed.append(1 - (defended.mask(x_adv, noise).float() * delta.abs()).sum(1) / delta.abs().sum(1))
    pseudo = torch.stack(pseudo)
    increase = delta.clamp(min=0)
    share = lambda classes: (masks[classes] * increase).sum(1) / increase.sum(1).clamp(min=1e-12)  # noqa: E731
    return {"pass1_true": (pseudo == y).float().mean(0), "pass1_adversarial": (pseudo == adv_class).float().mean(0),
            "defended_right": torch.stack(right).float().mean(0) > 0.5,
            "oracle_mask_right": defended.masked_logits(x_adv, y).argmax(1) == y,
            "adversarial_mask_right": defended.masked_logits(x_adv, adv_class).argmax(1) == y,
            "shift_on_true": share(y), "shift_on_adversarial": share(adv_class),
            "mask_removes": torch.stack(removed).mean(0)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smallcnn-robust", help="a zoo model with shipped rankings")
    ap.add_argument("--images", type=int, default=200, help="class-balanced test images")
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--sources", default="base,adaptive", help=f"examples from: {', '.join(SOURCES)}")
    ap.add_argument("--draws", type=int, default=9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--plot", action="store_true", help="only draw mechanism-MODEL.png from its JSON")
    args = ap.parse_args()
    if args.plot:
        d = json.loads((RESULTS / f"mechanism-{args.model}.json").read_text())
        print("wrote", plot(d["rows"], args.model, d["k"], d["neurons"]))
        return
    sources = args.sources.split(",")
    if args.model not in zoo.with_rankings() or set(sources) - set(SOURCES):
        ap.error(f"--model takes one of {zoo.with_rankings()}; --sources a list of {', '.join(SOURCES)}")
    torch.set_num_threads(2)
    model = zoo.load(args.model)
    setting = DefenseSpec.for_model(args.model)
    defended = setting.build(model, zoo.rankings(args.model), seed=args.seed)
    settings = AttackSettings(seed=args.seed, base_model=model)
    per_source = {s: [] for s in sources}
    loader = cifar10_loader("test", per_class=args.images // 10, batch_size=args.batch_size)
    from tqdm import tqdm

    for x, y in tqdm(loader, desc=f"{args.model}: attacks and measurements", unit="batch"):
        with torch.no_grad():
            clean_right = model(x).argmax(1) == y
        for source in sources:
            if source == "base":
                x_adv = run_attack("apgd-ce", model, x, y, settings)[0]
            else:
                x_adv = mask_aware_attack(defended, x, y, settings, run_attack("apgd-ce", model, x, y, settings)[0])[0]
            with torch.no_grad():
                fooled = clean_right & (model(x_adv).argmax(1) != y)  # the examples the defense must undo
                if fooled.any():
                    per_source[source].append(measure(defended, x[fooled], x_adv[fooled], y[fooled], args.draws,
                                                      args.seed))
    rows = []
    for source, parts in per_source.items():
        m = {k: torch.cat([p[k] for p in parts]).float() for k in parts[0]} if parts else {}
        n = len(m.get("defended_right", []))
        row = {"examples": SOURCES[source], "fooling_the_base": n}
        for key, value in m.items():
            row[key] = round(100 * value.mean().item(), 1)
        rows.append(row)
    print_table(rows, list(rows[0]))
    k, neurons = defended.k, defended.split.num_neurons
    print(f"(percentages of the examples that fool the base; a shift falling at random puts {100 * k / neurons:.1f}% "
          f"on a class's {k} of {neurons} neurons)")
    path = write_results(f"mechanism-{args.model}", {
        "model": args.model, "images": args.images, "defense": setting.describe(defended), "draws": args.draws,
        "k": k, "neurons": neurons, "random_share": round(100 * k / neurons, 1), "rows": rows})
    print("wrote", path.relative_to(RESULTS.parent.parent), "and", plot(rows, args.model, k, neurons).name)


def plot(rows: list[dict], name: str, k: int, neurons: int) -> Path:
    """``mechanism-NAME.png``: each link of the mechanism, per source of examples."""
    from matplotlib.figure import Figure

    links = [("pass1_true", "pass 1 names\nthe true class"), ("pass1_adversarial", "pass 1 names the\nadversarial class"),
             ("defended_right", "defended\nprediction right"), ("oracle_mask_right", "right with the\ntrue class's mask"),
             ("adversarial_mask_right", "right with the\nadversarial class's mask"),
             ("shift_on_true", "shift on the true\nclass's neurons"), ("shift_on_adversarial", "shift on the adv.\nclass's neurons"),
             ("mask_removes", "share of the shift\nthe mask removes")]
    fig = Figure(figsize=(11, 3.8))
    ax = fig.subplots()
    width = 0.8 / len(rows)
    for i, row in enumerate(rows):
        ax.bar([j + i * width for j in range(len(links))], [row.get(key, 0) for key, _ in links], width,
               label=f"{row['examples']} ({row['fooling_the_base']} examples)")
    ax.axhline(100 * k / neurons, color="k", ls="--", lw=1, label=f"a random {k} of {neurons} neurons")
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(links))], [label for _, label in links], fontsize=7)
    ax.set(ylabel="% of the examples that fool the base\n(the last three: % of their shift)", ylim=(0, 115),
           title=f"IG-Defense's mechanism on {name}")
    ax.legend(fontsize=7, loc="upper center", ncol=3)
    fig.tight_layout()
    path = RESULTS / f"mechanism-{name}.png"
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    main()
