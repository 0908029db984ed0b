"""Cost of the defense and of LO-IR, on the CPU.

1. Forward time of defended vs undefended models (n_samples=1) at batch 1, 2, 4, 8, 16, 64 and 256,
   for pyautoattack's CIFAR-10 ResNet-18 and the zoo's SmallCNN: runs alternate between the variants
   so all see the same machine load; peak memory of each, measured alone in its own process. The
   defended model runs as on this device by default (on a CPU: the shared backbone up to 16 backbone
   images, else two passes), and forced onto each path. The floor of the defense is the cheaper of
   the base model run twice (two passes) and the base model on the concatenated 2B images (one
   shared backbone pass); ``floor_ratio`` is that, ``vs_floor`` the default's time over it. With
   ``--compile``, the default defended model and the base model under ``torch.compile`` too.
2. LO-IR closed form vs per-neuron ablation (one full pass over the probe set per neuron, as the
   original release computes it) on the same probe subset: time, memory, top-k agreement.


    python benchmarks/overhead.py [--probe-per-class 5] [--skip-lo-ir] [--compile]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, median_time, peak_rss_mb, print_table, run_worker, write_results  # noqa: E402

MODELS = {"resnet18": "pyautoattack-resnet18", "smallcnn": "smallcnn-robust"}


def _load(name: str):
    from igdefense import zoo
    from igdefense.zoo.models import SmallCNN

    if MODELS[name] in zoo.available():
        return zoo.load(MODELS[name])
    return SmallCNN().eval()  # same architecture; timing does not depend on the weights


def _defended(model, shared_backbone: bool | None = None):
    import igdefense
    from igdefense.data import cifar10_loader

    rankings = igdefense.lo_ir(model, cifar10_loader("train", per_class=2, batch_size=20), progress=False)
    return igdefense.wrap(model, rankings, k=max(1, rankings.num_neurons // 10), seed=0,
                          shared_backbone=shared_backbone)


BATCHES = (1, 2, 4, 8, 16, 64, 256)


def interleaved_times(model_name: str, batch: int, compiled: bool = False) -> dict[str, float]:
    """Median seconds of each variant, alternating runs so all see the same machine load: base, the
    two floors (base twice; base on 2B images), defended (device default) and on each path."""
    base = _load(model_name)
    x = torch.rand(batch, 3, 32, 32)
    double = torch.cat([x, x])
    variants = {"base": base, "two_base_passes": lambda _: (base(x), base(x)), "base_on_2b": lambda _: base(double),
                "defended": _defended(_load(model_name)),
                "two_passes": _defended(_load(model_name), shared_backbone=False),
                "shared": _defended(_load(model_name), shared_backbone=True)}
    if compiled:
        variants["base_compiled"] = torch.compile(_load(model_name))
        variants["defended_compiled"] = torch.compile(_defended(_load(model_name)))
    repeats = max(8, min(60, 1000 // batch))
    times: dict[str, list[float]] = {name: [] for name in variants}
    with torch.no_grad():
        for _ in range(2):  # warm-up
            for m in variants.values():
                m(x)
        for _ in range(repeats):
            for name, m in variants.items():
                t = time.perf_counter()
                m(x)
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(t) for name, t in times.items()}


def worker_forward(model_name: str, variant: str, batch: int) -> dict:
    """Peak memory of a few forwards of one variant, alone in this process."""
    model = _load(model_name)
    if variant == "defended":
        model = _defended(model)
    x = torch.rand(batch, 3, 32, 32)
    with torch.no_grad():
        median_time(lambda: model(x), 3)
    return {"peak_rss_mb": peak_rss_mb()}


def worker_lo_ir(mode: str, per_class: int, out: str) -> dict:
    import igdefense
    from igdefense.data import cifar10_loader

    model = _load("resnet18")
    loader = cifar10_loader("train", per_class=per_class, batch_size=100)
    t = time.perf_counter()
    if mode == "closed":
        rankings = igdefense.lo_ir(model, loader, mode="closed", progress=False)
    else:  # the original release: one neuron zeroed per full pass over the probe set
        rankings = igdefense.lo_ir(model, loader, mode="ablation", neuron_batch=1, progress=False)
    seconds = time.perf_counter() - t
    rankings.save(out)
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--probe-per-class", type=int, default=5)
    ap.add_argument("--skip-lo-ir", action="store_true")
    ap.add_argument("--models", default=",".join(MODELS), help="forward rows to (re)measure; others are kept")
    ap.add_argument("--skip-forward", action="store_true", help="only the LO-IR comparison (keeps the JSON's forward rows)")
    ap.add_argument("--compile", action="store_true", help="also time the default and base models under torch.compile")
    ap.add_argument("--plot", action="store_true", help="only draw overhead.png from the JSON")
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.plot:
        print("wrote", plot(json.loads((RESULTS / "overhead.json").read_text())["forward"]))
        return
    torch.set_num_threads(2)
    if args.worker:
        kind, *rest = args.worker
        result = (worker_forward(rest[0], rest[1], int(rest[2])) if kind == "forward"
                  else worker_lo_ir(rest[0], int(rest[1]), rest[2]))
        print(json.dumps(result))
        return

    rows = []
    for model_name in [] if args.skip_forward else args.models.split(","):
        for batch in BATCHES:
            t = interleaved_times(model_name, batch, compiled=args.compile)
            base = run_worker(__file__, ["forward", model_name, "base", str(batch)])
            dfd = run_worker(__file__, ["forward", model_name, "defended", str(batch)])
            floor = min(t["two_base_passes"], t["base_on_2b"])
            row = {"model": model_name, "batch": batch,
                   "base_ms": round(1e3 * t["base"], 2), "defended_ms": round(1e3 * t["defended"], 2),
                   "ratio": round(t["defended"] / t["base"], 3), "floor_ratio": round(floor / t["base"], 3),
                   "vs_floor": round(t["defended"] / floor, 3),
                   "two_passes_ratio": round(t["two_passes"] / t["base"], 3),
                   "shared_backbone_ratio": round(t["shared"] / t["base"], 3),
                   "two_base_passes_ratio": round(t["two_base_passes"] / t["base"], 3),
                   "base_on_2b_ratio": round(t["base_on_2b"] / t["base"], 3),
                   "base_peak_mb": round(base["peak_rss_mb"]), "defended_peak_mb": round(dfd["peak_rss_mb"])}
            if args.compile:  # both against the eager base
                row["compiled_base_ratio"] = round(t["base_compiled"] / t["base"], 3)
                row["compiled_defended_ratio"] = round(t["defended_compiled"] / t["base"], 3)
            rows.append(row)
            print_table(rows[-1:], list(rows[-1]))
    previous = RESULTS / "overhead.json"
    previous = json.loads(previous.read_text()) if previous.exists() else {}
    measured = {r["model"] for r in rows}
    rows += [r for r in previous.get("forward", []) if r["model"] not in measured]
    if rows:
        print("\nDefended vs undefended forward (n_samples=1), median wall-clock:")
        print_table(rows, list(rows[0]))
    payload = {"forward": rows}

    if not args.skip_lo_ir:
        import igdefense

        with tempfile.TemporaryDirectory() as tmp:
            res = {}
            for mode in ("closed", "per-neuron"):
                res[mode] = run_worker(__file__, ["lo-ir", mode, str(args.probe_per_class), f"{tmp}/{mode}.st"])
                res[mode]["rankings"] = igdefense.Rankings.load(f"{tmp}/{mode}.st")
            a, b = res["closed"]["rankings"], res["per-neuron"]["rankings"]
            same_topk = all(torch.equal(a.top_k(k).sort(1).values, b.top_k(k).sort(1).values) for k in (10, 50, 100))
            lo = {"model": "resnet18", "probe_images": 10 * args.probe_per_class,
                  "closed_s": round(res["closed"]["seconds"], 3), "per_neuron_s": round(res["per-neuron"]["seconds"], 1),
                  "speedup": round(res["per-neuron"]["seconds"] / res["closed"]["seconds"], 1),
                  "closed_peak_mb": round(res["closed"]["peak_rss_mb"]),
                  "per_neuron_peak_mb": round(res["per-neuron"]["peak_rss_mb"]),
                  "max_abs_diff": float((a.importance - b.importance).abs().max()),
                  "same_top_k_10_50_100": same_topk}
        print("\nLO-IR closed form vs per-neuron ablation, same probe subset:")
        print_table([lo], list(lo))
        payload["lo_ir"] = lo
    elif "lo_ir" in previous:
        payload["lo_ir"] = previous["lo_ir"]  # kept from the last run that measured it
    print("wrote", write_results("overhead", payload))
    print("wrote", plot(rows))


def plot(rows: list[dict]) -> Path:
    """``overhead.png``: defended / base forward time against the batch, each model beside its floor."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.6))
    for ax, model in zip(fig.subplots(1, len(MODELS), sharey=True), MODELS):
        mine = [r for r in rows if r["model"] == model]
        batches = [r["batch"] for r in mine]
        for key, label, style in (("ratio", "defended (the device's default path)", "o-"),
                                  ("two_passes_ratio", "two passes", "s:"), ("shared_backbone_ratio", "shared backbone", "^:"),
                                  ("floor_ratio", "floor: base twice or on 2B images", "k--")):
            ax.plot(batches, [r[key] for r in mine], style, label=label, ms=4)
        ax.set(xscale="log", xlabel="batch", title=model, xticks=batches, xticklabels=[str(b) for b in batches])
        ax.grid(alpha=0.3)
    fig.axes[0].set_ylabel("time / undefended time")
    fig.axes[0].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path = RESULTS / "overhead.png"
    fig.savefig(path, dpi=110)
    return path


if __name__ == "__main__":
    main()
