"""RayS: model calls and wall-clock, each image at its own step (one call asks every unfinished image)
against the previous implementation (every image at the same step: a call asks only the images at
that step) and the floor (the model alone on calls of the same sizes as this implementation's).

On a GPU a small call costs about what a large one does, so the calls are what count there; on a CPU
the image-queries are. Both implementations make the same queries per image (checked here on the
undefended model: the same query counts and distances).

    python benchmarks/rays_calls.py [--images 50] [--queries 1000]   # -> results/rays_calls.json
"""

from __future__ import annotations

import argparse
import subprocess
import time
import types
from pathlib import Path

import torch

import igdefense
from igdefense import zoo
from igdefense.data import cifar10_loader
from igdefense.attacks import RayS

from common import write_results

BASELINE = "1f2d8bc"  # the last commit with the previous implementation


def previous_rays() -> type:
    source = subprocess.run(["git", "show", f"{BASELINE}:igdefense/eval/rays.py"], capture_output=True, text=True,
                            check=True, cwd=Path(__file__).parent).stdout
    module = types.ModuleType("rays_before")
    exec(compile(source, "rays_before.py", "exec"), module.__dict__)
    return module.RayS


def run(cls, model, x, y, queries: int) -> dict:
    sizes = []

    def counted(z):
        sizes.append(len(z))
        return model(z)

    torch.manual_seed(0)
    rays = cls(counted, 8 / 255, queries=queries, progress=False)
    t = time.perf_counter()
    rays.perturb(x, y)
    return {"seconds": round(time.perf_counter() - t, 2), "calls": len(sizes), "image_queries": sum(sizes),
            "sizes": sizes, "used": rays.used.tolist(), "distance": rays.distance.tolist()}


def floor_seconds(model, x, sizes: list[int]) -> float:
    """The model alone on calls of ``sizes`` images: what the attack costs beyond its queries."""
    t = time.perf_counter()
    with torch.no_grad():
        for n in sizes:
            model(x[:n])
    return round(time.perf_counter() - t, 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--queries", type=int, default=1000)
    args = ap.parse_args()
    base = zoo.load("smallcnn-robust")
    defended = igdefense.wrap(base, zoo.rankings("smallcnn-robust"), seed=0)
    x, y = next(iter(cifar10_loader("test", per_class=args.images // 10, batch_size=args.images)))
    before = previous_rays()
    rows = {}
    for name, model in (("base", base), ("IG-Defense", defended)):
        now, then = run(RayS, model, x, y, args.queries), run(before, model, x, y, args.queries)
        floor = floor_seconds(model, x, now["sizes"])
        rows[name] = {"now": {k: now[k] for k in ("seconds", "calls", "image_queries")},
                      "before": {k: then[k] for k in ("seconds", "calls", "image_queries")},
                      "floor_seconds": floor, "calls_before_over_now": round(then["calls"] / now["calls"], 2),
                      "now_over_floor": round(now["seconds"] / floor, 2),
                      "before_over_now": round(then["seconds"] / now["seconds"], 2),
                      "fooled": {"now": sum(d <= 8 / 255 for d in now["distance"]),
                                 "before": sum(d <= 8 / 255 for d in then["distance"])}}
        if name == "base":  # deterministic: the same queries per image
            rows[name]["same_queries_and_distances"] = now["used"] == then["used"] and now["distance"] == then["distance"]
        print(name, rows[name], flush=True)
    path = write_results("rays_calls", {"images": len(x), "queries": args.queries, "baseline": BASELINE,
                                        "models": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()
