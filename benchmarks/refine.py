"""Does LIME-guided refinement beat plain adversarial fine-tuning? (issue 14's experiment)

From the zoo's smallcnn-standard, each trained row gets the same training budget in CPU seconds
of its process (robust to other load on the machine; wall clock is about CPU / threads):
  (a) baseline: smallcnn-standard as shipped
  (b) FGSM-RS adversarial fine-tuning (Wong et al. 2020; eps 8/255, step 10/255)
  (c) refine, LIME attributions (reference: the zoo's smallcnn-robust)
  (d) refine, input-gradient saliency in place of LIME (is LIME needed?)
  (e) IG-Defense (LO-IR, default k) on (c), rankings recomputed on 100 train images per class
(c) and (d) run rounds of --attribute images attributed + 100 training steps until the budget,
which counts the attribution too. Same optimizer for (b)-(d): SGD lr 0.01, momentum 0.9,
nesterov, wd 5e-4, batch 128, no augmentation, and the same 500 random training images held out.

Evaluation on the first --n CIFAR-10 (JPEG copy) test images (class-balanced): clean; FGSM and PGD
(10 steps of eps/4, random start) at eps 0.01, 0.02, 0.03; APGD-CE then APGD-T on its survivors
at eps 0.01 and 8/255 (their image-wise worst case; for (e) also APGD-CE transferred from (c));
the sanity checks on (c) and (d); the 19 x 5 CIFAR-10-C-style corruptions (seed 0) for every row.
Paired 95% intervals against (b). Every piece is cached under --work, so a killed run resumes where
it was.

    python benchmarks/refine.py [--budget-cpu 1800] [--attribute 64] [--n 1000] [--work runs/refine-experiment]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_results  # noqa: E402

from igdefense import evaluate, lo_ir, wrap, zoo  # noqa: E402
from igdefense import stats  # noqa: E402
from igdefense.eval import AttackSettings  # noqa: E402
from igdefense.atomic import atomic_path  # noqa: E402
from igdefense.corruptions import NAMES  # noqa: E402
from igdefense.data import CIFAR10, CIFAR10_CLASSES, cifar10_loader  # noqa: E402
from igdefense.refine import RefineConfig, refine  # noqa: E402
from igdefense.images import items  # noqa: E402
from igdefense.refine.loop import holdout_split  # noqa: E402
from igdefense.eval.sanity import run_sanity_checks  # noqa: E402

ROWS = {"a": "baseline (smallcnn-standard)", "b": "FGSM-RS fine-tune", "c": "refine, LIME",
        "d": "refine, input-gradient saliency", "e": "IG-Defense on (c)"}
PAPER_EPS = (0.01, 0.02, 0.03)
APGD_EPS = (0.01, 8 / 255)


def fgsm_rs_finetune(model, data, cfg: RefineConfig) -> int:
    """Row (b): the refinement loop's optimizer, data order and budget, with the FGSM-RS loss."""
    from igdefense.attacks import fgsm_from_noise

    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    train_idx, _ = holdout_split(len(data), cfg.holdout, cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    cpu0, steps, epoch = time.process_time(), 0, 0
    model.train()
    while True:
        shuffle = torch.Generator().manual_seed(cfg.seed * 1000 + epoch)
        order = train_idx[torch.randperm(len(train_idx), generator=shuffle)]
        for i in range(0, len(order) - cfg.batch_size + 1, cfg.batch_size):
            x, y = items(data, order[i:i + cfg.batch_size])
            loss = F.cross_entropy(model(fgsm_from_noise(model, x, y, cfg.eps, 10 / 255, gen)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            if time.process_time() - cpu0 >= cfg.budget_cpu_seconds:
                return steps
        epoch += 1


def trained(row: str, work: Path, budget: float, attribute_per_round: int) -> torch.nn.Module:
    """The model of a trained row, trained once and kept in ``work``."""
    path = work / f"{row}.pt"
    model = zoo.load("smallcnn-standard")
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True)["model"])
        return model.eval()
    data = CIFAR10("train")
    cfg = RefineConfig(budget_cpu_seconds=budget, rounds=1000, steps_per_round=100,
                       attribute_per_round=attribute_per_round, precision="fp32")  # (as the committed rows were made)
    t0, cpu0 = time.perf_counter(), time.process_time()
    if row == "b":
        steps = fgsm_rs_finetune(model, data, cfg)
        info = {"steps": steps}
    else:
        shared = work / "refine-c" / "segments.safetensors"  # superpixels of the training split: computed once
        if row != "c" and shared.exists() and not (work / f"refine-{row}" / "segments.safetensors").exists():
            (work / f"refine-{row}").mkdir(parents=True, exist_ok=True)
            (work / f"refine-{row}" / "segments.safetensors").write_bytes(shared.read_bytes())
        refine(model, data, reference=zoo.load("smallcnn-robust"), out_dir=work / f"refine-{row}", config=cfg,
               method="lime" if row == "c" else "saliency")
        rounds = [json.loads(line) for line in (work / f"refine-{row}" / "log.jsonl").read_text().splitlines()]
        info = {"steps": sum(r["steps"] for r in rounds), "rounds": rounds}
    info.update(wall_seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - cpu0)
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "train": info}, tmp)
    return model.eval()


def evaluated(row: str, model, x, y, work: Path, base=None) -> dict[str, list[int]]:
    """Per-image correctness of every column (cached in ``work``)."""
    path = work / f"eval-{row}.json"
    if path.exists():
        return json.loads(path.read_text())
    out = {}
    data = [(x[i:i + 250], y[i:i + 250]) for i in range(0, len(x), 250)]  # resumable per batch; cache-sized
    for eps in PAPER_EPS:
        r = evaluate(model, data, attacks=("fgsm", "pgd"), settings=AttackSettings(eps=eps),
                     desc=f"({row}) FGSM/PGD eps {eps}",
                     log_path=work / f"log-{row}-{eps:.4f}.jsonl")
        out["clean"] = r.correct["clean"].int().tolist()
        out[f"fgsm {eps:.2f}"] = r.correct["fgsm"].int().tolist()
        out[f"pgd {eps:.2f}"] = r.correct["pgd"].int().tolist()
    for eps in APGD_EPS:
        attacks = ("apgd-ce", "apgd-t") + (("transfer",) if base is not None else ())
        settings = AttackSettings(eps=eps, base_model=base, transfer_from=("apgd-ce",), cache=work / "adversarial")
        r = evaluate(model, data, attacks=attacks, settings=settings, cascade=True, desc=f"({row}) APGD eps {eps:.4f}",
                     log_path=work / f"log-{row}-apgd-{eps:.4f}.jsonl")
        out[f"apgd {eps:.4f}"] = r.worst_case.int().tolist()
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(out))
    return out


def corrupted(row: str, model, x, y, work: Path) -> dict[str, list[float]]:
    """Per-image share of the 19 x 5 CIFAR-10-C-style corrupted copies classified right, and the
    accuracy per corruption (seed 0; the same corrupted images for every row; cached in ``work``)."""
    path = work / f"corruptions-{row}.json"
    if path.exists():
        return json.loads(path.read_text())
    data = [(x[i:i + 250], y[i:i + 250]) for i in range(0, len(x), 250)]
    r = evaluate(model, data, attacks=(), corruptions=NAMES, desc=f"({row}) corruptions",
                 log_path=work / f"log-{row}-corruptions.jsonl")
    out = {"per_image": r.corruption_per_image.tolist(),
           "per_corruption": {c: sum(s.values()) / len(s) for c, s in r.corruption_accuracy.items()}}
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(out))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-cpu", type=float, default=1800.0, help="training budget per row, CPU seconds")
    ap.add_argument("--attribute", type=int, default=64, help="images attributed per round (rows c, d)")
    ap.add_argument("--n", type=int, default=1000, help="test images (class-balanced)")
    ap.add_argument("--work", default="runs/refine-experiment")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    x, y = next(iter(cifar10_loader("test", per_class=args.n // 10, batch_size=args.n)))
    models = {"a": zoo.load("smallcnn-standard")}
    for row in "bcd":
        models[row] = trained(row, work, args.budget_cpu, args.attribute)
    rankings_path = work / "c.lo-ir.safetensors"
    if not rankings_path.exists():
        lo_ir(models["c"], cifar10_loader("train", per_class=100, batch_size=200),
              class_names=CIFAR10_CLASSES).save(rankings_path)
    models["e"] = wrap(models["c"], str(rankings_path))
    results = {row: evaluated(row, m, x, y, work, base=models["c"] if row == "e" else None)
               for row, m in models.items()}
    corruption = {row: corrupted(row, m, x, y, work) for row, m in models.items()}
    sanity = {}
    for row in "cd":  # the refined rows: a gradient penalty can mask gradients
        sanity_path = work / f"sanity-{row}.json"
        if not sanity_path.exists():
            every = max(1, args.n // 100)
            checks = run_sanity_checks(models[row], x[::every], y[::every], eps=8 / 255)
            sanity_path.write_text(json.dumps([{"name": c.name, "passed": c.passed, "detail": c.detail}
                                               for c in checks]))
        sanity[row] = json.loads(sanity_path.read_text())
    train = {row: {k: v for k, v in torch.load(work / f"{row}.pt", weights_only=True)["train"].items() if k != "rounds"}
             for row in "bcd"}
    rounds = {row: torch.load(work / f"{row}.pt", weights_only=True)["train"].get("rounds") for row in "cd"}
    columns = list(results["a"])
    table = {row: {c: sum(v) / len(v) for c, v in res.items()} for row, res in results.items()}
    versus_b = {row: {c: vars(stats.paired_difference(torch.tensor(results["b"][c], dtype=torch.bool),
                                                        torch.tensor(res[c], dtype=torch.bool)))
                      for c in columns} for row, res in results.items() if row != "b"}
    corruption_summary = {
        row: {"mean": sum(c["per_image"]) / len(c["per_image"]), "per_corruption": c["per_corruption"],
              "versus_b": None if row == "b" else vars(stats.paired_mean_difference(
                  torch.tensor(corruption["b"]["per_image"]), torch.tensor(c["per_image"])))}
        for row, c in corruption.items()}
    payload = {"rows": ROWS, "n": args.n, "budget_cpu_seconds": args.budget_cpu, "attribute_per_round": args.attribute,
               "accuracy": table, "versus_b": versus_b, "corruptions": corruption_summary, "train": train,
               "refine_rounds": rounds, "sanity": sanity, "per_image": results}
    write_results("refine", payload)
    _markdown(payload, columns)


def _markdown(p: dict, columns: list[str]) -> None:
    lines = [f"# Refinement vs FGSM-RS fine-tuning: {p['n']} CIFAR-10 (JPEG copy) test images",
             "", f"Command: `python benchmarks/refine.py --budget-cpu {p['budget_cpu_seconds']:.0f} "
             f"--attribute {p['attribute_per_round']} --n {p['n']}`; "
             "see benchmarks/results/refine.json (machine, date, per-image results).", "",
             "| row | " + " | ".join(columns) + " | train CPU s |", "|---" * (len(columns) + 2) + "|"]
    for row, name in p["rows"].items():
        acc = " | ".join(f"{100 * p['accuracy'][row][c]:.1f}" for c in columns)
        cpu = p["train"].get(row, {}).get("cpu_seconds")
        lines.append(f"| ({row}) {name} | {acc} | {'' if cpu is None else f'{cpu:.0f}'} |")
    lines += ["", "Paired difference against (b), points [95% CI]:", "",
              "| row | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row, diffs in p["versus_b"].items():
        cells = " | ".join(f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
                           for d in diffs.values())
        lines.append(f"| ({row}) | {cells} |")
    lines += ["", "Mean accuracy over the 19 CIFAR-10-C-style corruptions x 5 severities (seed 0), same images; "
              "paired difference against (b), points [95% CI]:", "", "| row | mean corruption accuracy | vs (b) |",
              "|---|---|---|"]
    for row, c in p["corruptions"].items():
        d = c["versus_b"]
        vs = "" if d is None else f"{100 * d['difference']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"
        lines.append(f"| ({row}) | {100 * c['mean']:.1f} | {vs} |")
    for row, checks in p["sanity"].items():
        lines += ["", f"Sanity checks on ({row}): " + "; ".join(f"{'PASS' if c['passed'] else 'FAIL'} {c['name']}"
                                                               for c in checks)]
    (RESULTS / "refine.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
