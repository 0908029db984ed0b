"""Generating the 19 x 5 CIFAR-10-C-style corruptions: seconds per corruption, peak memory, and the
speedup over the script's per-image numpy code (tests/reference_corruptions.py: the same formulas,
with scikit-image / scipy / OpenCV / PIL calls, one image at a time), in the same run.

Floor: the same job with the identity as corruption (read the images, quantise, write the uint8
files): what no corruption can beat.

    python benchmarks/corruptions.py                 # all 10,000 test images (the issue's target: <= 10 min)
    python benchmarks/corruptions.py --per-class 100 # quick
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common import peak_rss_mb, print_table, run_worker, write_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def _data(per_class: int | None):
    from igdefense.data import CIFAR10, balanced_indices

    data = CIFAR10("test")
    if per_class:
        data.indices = balanced_indices(data.labels, per_class=per_class)
    return data


def worker(per_class: int | None) -> dict:
    """Write every corruption (timed one by one) and the identity floor; report seconds and peak memory."""
    import torch

    from igdefense.corruptions import NAMES, write_dataset
    from igdefense.corruptions.blur import to_8bit
    from igdefense.corruptions.dataset import CHUNK, chunk

    data = _data(per_class)
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        write_dataset(tmp, data, names=(), progress=False)  # labels.npy: not part of any corruption's time
        for name in NAMES:
            t = time.perf_counter()
            write_dataset(tmp, data, names=(name,), progress=False)
            seconds[name] = time.perf_counter() - t
            Path(tmp, f"{name}.npy").unlink()  # keep the disk footprint to one file
        t = time.perf_counter()  # the floor: the same reading, quantising and writing, no corruption
        out = np.lib.format.open_memmap(Path(tmp, "floor.npy"), mode="w+", dtype=np.uint8,
                                        shape=(5 * len(data), 32, 32, 3))
        for start in range(0, len(data), CHUNK):
            x, _ = chunk(data, start)
            for severity in range(5):
                out[severity * len(data) + start:][:len(x)] = (
                    (to_8bit(x) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
        out.flush()
        floor = time.perf_counter() - t
    return {"seconds": seconds, "floor_seconds": floor, "peak_rss_mb": peak_rss_mb(), "images": len(data),
            "threads": torch.get_num_threads()}


def baseline(names, n_images: int) -> dict[str, float]:
    """Seconds per image (all 5 severities) of the per-image numpy transcription."""
    import reference_corruptions as ref

    x = (_data(max(1, n_images // 10)).__getitems__(list(range(n_images)))[0] * 255).round().byte()
    x = x.permute(0, 2, 3, 1).numpy()
    rng = np.random.default_rng(0)
    out = {}
    for name in names:
        t = time.perf_counter()
        for img in x:
            for severity in range(1, 6):
                ref.script(name, img, severity, rng)
        out[name] = (time.perf_counter() - t) / len(x)
    return out


def examples(path: Path, index: int = 7) -> Path:
    """One test image under every corruption and severity: a 19 x 6 grid (the clean image first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from igdefense.atomic import atomic_path
    from igdefense.corruptions import NAMES, corrupt

    x = _data(10).__getitems__([index])[0]
    fig, axes = plt.subplots(len(NAMES), 6, figsize=(7.2, len(NAMES) + 0.6))
    for r, name in enumerate(NAMES):
        row = [x[0]] + [corrupt(x, name, s, seed=0)[0] for s in range(1, 6)]
        for c, (ax, img) in enumerate(zip(axes[r], row)):
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title("clean" if c == 0 else f"severity {c}", fontsize=7)
        axes[r][0].set_ylabel(name.replace("_", " "), fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle("CIFAR-10-C-style corruptions, CIFAR parameters, seed 0", fontsize=8, y=0.998)
    fig.subplots_adjust(left=0.2, right=0.99, bottom=0.005, top=0.975, wspace=0.05, hspace=0.08)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--per-class", type=int, default=None, help="test images per class (default: all 1,000)")
    ap.add_argument("--baseline-images", type=int, default=50, help="images the per-image baseline runs on")
    ap.add_argument("--examples", action="store_true", help="only draw results/corruptions_examples.png")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.examples:
        from common import RESULTS

        print(examples(RESULTS / "corruptions_examples.png"))
        return
    if args.worker:
        import json

        print(json.dumps(worker(args.per_class)))
        return
    from igdefense.corruptions import NAMES

    ours = run_worker(__file__, [] if args.per_class is None else ["--per-class", str(args.per_class)])
    n = ours["images"]
    per_image = baseline(NAMES, args.baseline_images)
    rows = []
    for name in NAMES:
        s = ours["seconds"][name]
        rows.append({"corruption": name, "seconds": round(s, 2), "ms_per_image_x5": round(1000 * s / n, 3),
                     "baseline_ms_per_image_x5": round(1000 * per_image[name], 2),
                     "speedup": round(per_image[name] * n / s, 1), "x_floor": round(s / ours["floor_seconds"], 1)})
    total = sum(ours["seconds"].values())
    summary = {"images": n, "total_seconds": round(total, 1), "floor_seconds_per_corruption": round(
        ours["floor_seconds"], 2), "baseline_total_seconds_extrapolated": round(sum(per_image.values()) * n, 1),
        "speedup_total": round(sum(per_image.values()) * n / total, 1), "peak_rss_mb": round(ours["peak_rss_mb"]),
        "torch_threads": ours["threads"], "baseline_images": args.baseline_images}
    print_table(rows, list(rows[0]))
    print(summary)
    write_results("corruptions" if args.per_class is None else f"corruptions-{args.per_class}pc",
                  {"summary": summary, "rows": rows})


if __name__ == "__main__":
    main()
