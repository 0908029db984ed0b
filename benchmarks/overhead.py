"""Cost of the defense and of LO-IR, on the CPU.

1. Forward time of defended vs undefended models (n_samples=1) at batch 1, 64 and 256, for
   pyautoattack's CIFAR-10 ResNet-18 and the zoo's SmallCNN: runs alternate between the variants so
   all see the same machine load; peak memory of each, measured alone in its own process. The
   defended model runs as on this device by default (two passes on a CPU) and, for comparison,
   with the backbone shared over the concatenated [noisy; clean] batch (the GPU default); and the
   base model run twice in a row, the floor of any two-pass method.
2. LO-IR closed form vs per-neuron ablation (one full pass over the probe set per neuron, as the
   original release computes it) on the same probe subset: time, memory, top-k agreement.


    python benchmarks/overhead.py [--probe-per-class 5] [--skip-lo-ir]
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


def interleaved_times(model_name: str, batch: int) -> dict[str, float]:
    """Median seconds of base, base run twice (the two-pass floor), defended (device default) and
    defended with a shared backbone, alternating runs so all see the same machine load."""
    base = _load(model_name)
    variants = {"base": base, "floor": lambda x: (base(x), base(x)), "defended": _defended(_load(model_name)),
                "shared": _defended(_load(model_name), shared_backbone=True)}
    x = torch.rand(batch, 3, 32, 32)
    repeats = {1: 60, 64: 15, 256: 8}[batch]
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
    ap.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.worker:
        kind, *rest = args.worker
        result = (worker_forward(rest[0], rest[1], int(rest[2])) if kind == "forward"
                  else worker_lo_ir(rest[0], int(rest[1]), rest[2]))
        print(json.dumps(result))
        return

    rows = []
    for model_name in [] if args.skip_forward else args.models.split(","):
        for batch in (1, 64, 256):
            t = interleaved_times(model_name, batch)
            base = run_worker(__file__, ["forward", model_name, "base", str(batch)])
            dfd = run_worker(__file__, ["forward", model_name, "defended", str(batch)])
            rows.append({"model": model_name, "batch": batch,
                         "base_ms": round(1e3 * t["base"], 2), "defended_ms": round(1e3 * t["defended"], 2),
                         "ratio": round(t["defended"] / t["base"], 3),
                         "shared_backbone_ratio": round(t["shared"] / t["base"], 3),
                         "two_base_passes_ratio": round(t["floor"] / t["base"], 3),
                         "base_peak_mb": round(base["peak_rss_mb"]), "defended_peak_mb": round(dfd["peak_rss_mb"])})
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


if __name__ == "__main__":
    main()
