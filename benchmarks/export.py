"""ONNX export of the defended model: parity with PyTorch on real images, and speed.

1. Parity on the first 100 CIFAR-10 (JPEG copy) test images per class (1,000): with the noise as
   a graph input, same noise in both (max |logit diff|, argmax disagreements); with in-graph noise,
   clean accuracy of both.
2. Speed: onnxruntime (CPU provider, offline-optimised graph) vs PyTorch eager, defended model,
   batch 1 and 64, runs alternating so both see the same load; peak memory of each alone in its
   own process.

    python benchmarks/export.py [--per-class 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import median_time, peak_rss_mb, print_table, run_worker, write_results  # noqa: E402

MODELS = ["smallcnn-robust", "pyautoattack-resnet18"]


def _defended(name: str):
    import igdefense
    from igdefense import zoo
    from igdefense.data import cifar10_loader

    model = zoo.load(name)
    if name in zoo.with_rankings():
        rankings = zoo.rankings(name)
    else:
        rankings = igdefense.lo_ir(model, cifar10_loader("train", per_class=200, batch_size=250), progress=False)
    return igdefense.wrap(model, rankings, seed=0)


def interleaved_times(defended, onnx_path: str, batch: int) -> tuple[float, float]:
    """Median seconds of PyTorch and onnxruntime runs, alternating so both see the same machine load."""
    from igdefense.export import OnnxDefense

    session = OnnxDefense(onnx_path)
    x = torch.rand(batch, 3, 32, 32)
    xn = x.numpy()
    times = {"torch": [], "ort": []}
    with torch.no_grad():
        for _ in range(3):
            defended(x), session(xn)
        for _ in range({1: 100, 64: 20}[batch]):
            for name, run in (("torch", lambda: defended(x)), ("ort", lambda: session(xn))):
                t = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t)
    return statistics.median(times["torch"]), statistics.median(times["ort"])


def worker(engine: str, name: str, batch: int, onnx_path: str) -> dict:
    """Peak memory of a few runs of one engine, alone in this process."""
    x = torch.rand(batch, 3, 32, 32)
    if engine == "torch":
        model = _defended(name)
        run = lambda: model(x)  # noqa: E731
    else:
        from igdefense.export import OnnxDefense

        session = OnnxDefense(onnx_path)
        run = lambda: session(x.numpy())  # noqa: E731
    with torch.no_grad():
        median_time(run, 3)
    return {"peak_rss_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.worker:
        engine, name, batch, path = args.worker
        print(json.dumps(worker(engine, name, int(batch), path)))
        return

    from igdefense.data import cifar10_loader
    from igdefense.export import OnnxDefense, check_parity, optimize, to_onnx

    parity, speed = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            defended = _defended(name)
            loader = cifar10_loader("test", per_class=args.per_class, batch_size=250)
            for noise in ("input", "graph"):
                path = to_onnx(defended, f"{tmp}/{name}-{noise}.onnx", noise=noise)
                report = check_parity(OnnxDefense(path), defended, loader)
                parity.append({"model": name, **report})
                print_table(parity[-1:], list(parity[-1]))
            fast = optimize(f"{tmp}/{name}-graph.onnx", f"{tmp}/{name}-opt.onnx")
            for batch in (1, 64):
                t_torch, t_ort = interleaved_times(defended, str(fast), batch)
                t = run_worker(__file__, ["torch", name, str(batch), "-"])
                o = run_worker(__file__, ["ort", name, str(batch), str(fast)])
                speed.append({"model": name, "batch": batch, "pytorch_ms": round(1e3 * t_torch, 2),
                              "onnxruntime_ms": round(1e3 * t_ort, 2), "speedup": round(t_torch / t_ort, 2),
                              "pytorch_peak_mb": round(t["peak_rss_mb"]), "onnxruntime_peak_mb": round(o["peak_rss_mb"])})
                print_table(speed[-1:], list(speed[-1]))
    print("\nParity (CIFAR-10 JPEG copy test images):")
    print_table(parity, list(parity[0]))
    print("\nDefended model, onnxruntime CPU (optimised graph, in-graph noise) vs PyTorch eager:")
    print_table(speed, list(speed[0]))
    print("wrote", write_results("export", {"parity": parity, "speed": speed}))


if __name__ == "__main__":
    main()
