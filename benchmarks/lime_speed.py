"""LIME speed: igdefense.attribution.lime vs the `lime` package vs the floor, same model, same run.

The floor is the model alone on the same number of images (num_samples forward passes per
image, at the same batch size): LIME cannot be cheaper than the forward passes it needs. It is
measured on channels_last batches, the faster layout on this CPU, and on plain NCHW ones
(``floor-nchw``: what a model given NCHW batches costs; the package's NHWC numpy batches reach the
model as channels_last tensors). Every
variant runs in its own process (peak memory is its own), alternating over the repeats so all see
the same machine load. Same SLIC superpixels for both LIMEs; the package gets its default
classifier batch (10) and the batch size measured here.

    python benchmarks/lime_speed.py [--images 5] [--samples 1000] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import peak_rss_mb, print_table, run_worker, write_results  # noqa: E402

MODEL = "smallcnn-standard"


def _inputs(n_images: int):
    from igdefense import zoo
    from igdefense.attribution import segment
    from igdefense.data import cifar10_loader

    x, _ = next(iter(cifar10_loader("test", per_class=max(1, -(-n_images // 10)), batch_size=10 * n_images)))
    x = x[:: max(1, len(x) // n_images)][:n_images]
    return zoo.load(MODEL), x, segment(x)


def worker(variant: str, batch: int, n_images: int, samples: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    model, x, segments = _inputs(n_images)
    if variant.startswith("floor"):
        layout = torch.contiguous_format if variant == "floor-nchw" else torch.channels_last
        chunk = x[:1].expand(batch, -1, -1, -1).contiguous(memory_format=layout)

        def run():
            with torch.no_grad():
                for start in range(0, n_images * samples, batch):
                    model(chunk[:min(batch, n_images * samples - start)])
    elif variant == "igdefense":
        from igdefense.attribution import lime

        def run():
            lime(model, x, segments, num_samples=samples, batch_size=batch, seed=0)
    else:
        from lime.lime_image import LimeImageExplainer

        def classify(images):
            with torch.no_grad():
                return torch.softmax(model(torch.from_numpy(images).permute(0, 3, 1, 2).float()), 1).numpy()

        def run():
            for img, seg in zip(x, segments):
                LimeImageExplainer(random_state=0).explain_instance(
                    img.permute(1, 2, 0).double().numpy(), classify, num_samples=samples, batch_size=batch,
                    segmentation_fn=lambda _, s=seg.numpy(): s, random_seed=0, top_labels=5)
    t = time.perf_counter()
    run()
    return {"seconds": time.perf_counter() - t, "peak_mb": peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--worker", nargs=5, metavar=("VARIANT", "BATCH", "IMAGES", "SAMPLES", "THREADS"))
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--samples", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batches", default="10,100,250", help="batch sizes (perturbed images per forward)")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if args.worker:
        variant, *nums = args.worker
        print(json.dumps(worker(variant, *map(int, nums))))
        return
    variants = [(v, b) for b in map(int, args.batches.split(","))
                for v in ("floor", "floor-nchw", "igdefense", "lime-package")]
    runs: dict = {v: [] for v in variants}
    for _ in range(args.repeats):  # alternate: every variant sees the same load
        for v, b in variants:
            runs[(v, b)].append(run_worker(__file__, [v, str(b), str(args.images), str(args.samples),
                                                      str(args.threads)]))
    rows = []
    for (v, b), rs in runs.items():
        seconds = statistics.median(r["seconds"] for r in rs)
        rows.append({"variant": v, "batch": b, "seconds": round(seconds, 3),
                     "images_per_s": round(args.images / seconds, 3),
                     "peak_mb": round(max(r["peak_mb"] for r in rs), 1)})
    best_floor = min(r["seconds"] for r in rows if r["variant"] == "floor")
    for r in rows:
        same_batch_floor = next(f["seconds"] for f in rows if f["variant"] == "floor" and f["batch"] == r["batch"])
        r["x_floor_same_batch"] = round(r["seconds"] / same_batch_floor, 3)
        r["x_best_floor"] = round(r["seconds"] / best_floor, 3)
    package = min(r["seconds"] for r in rows if r["variant"] == "lime-package")
    ours = min(r["seconds"] for r in rows if r["variant"] == "igdefense")
    print_table(rows, list(rows[0]))
    summary = {"igdefense_best_x_best_floor": round(ours / best_floor, 3),
               "speedup_over_lime_package_best_vs_best": round(package / ours, 3)}
    print(summary)
    path = write_results("lime_speed", {
        "model": MODEL, "images": args.images, "num_samples": args.samples, "torch_threads": args.threads,
        "segmentation": "SLIC n_segments=50 (igdefense.attribution.segment)", "top_labels": 5,
        "repeats": args.repeats, "rows": rows, "summary": summary})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
