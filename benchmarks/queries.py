"""Black-box attack queries: PyTorch eager vs onnxruntime (igdefense.queries), RayS on real images.

RayS on the zoo's robust SmallCNN, undefended and defended (k=13, sigma=4/255), the first
``--per-class`` CIFAR-10 test images of each class, ``--queries`` queries per image. Each run is a
fresh process (its own peak memory), the variants alternate so they see the same load, and the
median of ``--repeats`` runs is reported with the ratio to PyTorch from the same round. Also checks
that both backends found the same adversarial distances.

    python benchmarks/queries.py [--per-class 5] [--queries 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import peak_rss_mb, print_table, run_worker, write_results  # noqa: E402

VARIANTS = [(m, b) for m in ("undefended", "defended") for b in ("pytorch", "onnxruntime")]


def worker(model_kind: str, backend: str, per_class: int, queries: int) -> dict:
    import torch

    from igdefense import IGDefense, zoo
    from igdefense.data import cifar10_loader
    from igdefense.queries import query_function
    from igdefense.rays import RayS

    model = zoo.load("smallcnn-robust")
    if model_kind == "defended":
        model = IGDefense(model, zoo.rankings("smallcnn-robust"), k=13, sigma=4 / 255, seed=0).eval()
    x, y = next(iter(cifar10_loader("test", per_class=per_class, batch_size=10 * per_class)))
    query = query_function(model, x) if backend == "onnxruntime" else model
    with torch.no_grad():
        query(x)  # warm-up: first-call allocations and primitive creation
    start = time.perf_counter()
    rays = RayS(query, 8 / 255, queries=queries, progress=False)
    rays.perturb(x, y)
    return {"seconds": time.perf_counter() - start, "peak_mb": peak_rss_mb(),
            "distance": rays.distance.tolist(), "fooled": int((rays.distance <= 8 / 255).sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--per-class", type=int, default=5)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "BACKEND"))
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.per_class, args.queries)))
        return
    runs: dict[tuple[str, str], list[dict]] = {v: [] for v in VARIANTS}
    for _ in range(args.repeats):
        for v in VARIANTS:
            runs[v].append(run_worker(__file__, [*v, "--per-class", str(args.per_class),
                                                 "--queries", str(args.queries)]))
    rows = []
    for model_kind, backend in VARIANTS:
        r = runs[(model_kind, backend)]
        ratios = [t["seconds"] / o["seconds"] for t, o in zip(runs[(model_kind, "pytorch")], r)]
        same = all(abs(a - b) < 1e-4 for a, b in zip(r[0]["distance"], runs[(model_kind, "pytorch")][0]["distance"]))
        rows.append({"model": model_kind, "backend": backend, "images": 10 * args.per_class, "queries": args.queries,
                     "median_s": round(statistics.median(t["seconds"] for t in r), 2),
                     "speedup_vs_pytorch": round(statistics.median(ratios), 2),
                     "peak_mb": round(max(t["peak_mb"] for t in r)), "fooled": r[0]["fooled"],
                     "same_distances_as_pytorch": same})
    print_table(rows, list(rows[0]))
    print(f"wrote {write_results('queries', {'rows': rows})}")


if __name__ == "__main__":
    main()
