"""bfloat16 vs float32 on this CPU, in one run: what the precision policy (igdefense.precision) buys.

For the zoo's PreAct ResNet-18 (random weights: the time does not depend on them) and SmallCNN, each
work is timed in float32 (channels-last, as igdefense trains) and under bfloat16 autocast, the two
interleaved so that both see the same machine load (medians):

- ``train_step``: one FGSM-RS training step of 128 images (two forward+backward passes, SGD step);
- ``forward``: inference at batch 256;
- ``defended_forward``: IGDefense (k = 10%, one noise draw) at batch 256, ``precision="bf16"`` vs fp32;
- ``apgd_step``: one attack step, forward and backward to the input, at batch 64 (an attack's model as
  :func:`igdefense.attacks.run_attack` wraps it);
- ``lime_batch``: one LIME call, 4 images x 250 perturbations (``igdefense.attribution.attribute``:
  the model's queries plus LIME's regressions, which stay float64).

The physical floor: a matrix unit cannot speed a job up more than it speeds up a large matrix product,
so ``gemm`` (2048 x 2048 x 2048, float32 vs bfloat16 inputs) gives the ceiling of every ratio, and
``of_ceiling`` says how much of it each work reaches.

    python benchmarks/precision.py            # ~4 min on 2 cores; pause background runs first
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import print_table, write_results  # noqa: E402

from igdefense.precision import Autocast, bf16_units, cpu_bf16_is_faster  # noqa: E402

CL = torch.channels_last


def _model(arch: str):
    from igdefense.zoo.models import ARCHITECTURES

    torch.manual_seed(0)
    return ARCHITECTURES[arch]().to(memory_format=CL)


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Median seconds of each callable, alternating them so that all see the same machine load."""
    for fn in fns.values():  # warm-up: oneDNN picks its kernels on the first calls
        fn()
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    return {name: statistics.median(t) for name, t in times.items()}


def _in(dtype):
    from igdefense.precision import autocast

    return autocast(dtype, "cpu")


def train_step(arch: str, dtype) -> callable:
    from igdefense.attacks import fgsm_from_noise

    model = _model(arch).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(128, 3, 32, 32).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (128,))
    gen = torch.Generator().manual_seed(0)

    def step():
        with _in(dtype):
            adv = fgsm_from_noise(model, x, y, 8 / 255, 10 / 255, gen)
            loss = F.cross_entropy(model(adv).float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def forward(arch: str, dtype) -> callable:
    model = _model(arch).eval()
    x = torch.rand(256, 3, 32, 32).contiguous(memory_format=CL)

    def run():
        with torch.no_grad(), _in(dtype):
            model(x)
    return run


def defended_forward(arch: str, dtype) -> callable:
    import igdefense
    from igdefense.data import cifar10_loader

    model = _model(arch).eval()
    rankings = igdefense.lo_ir(model, cifar10_loader("train", per_class=1, batch_size=10), progress=False)
    defended = igdefense.wrap(model, rankings, precision="bf16" if dtype == torch.bfloat16 else "fp32", seed=0)
    x = torch.rand(256, 3, 32, 32).contiguous(memory_format=CL)

    def run():
        with torch.no_grad():
            defended(x)
    return run


def apgd_step(arch: str, dtype) -> callable:
    model = _model(arch).eval()
    attacked = model if dtype == torch.float32 else Autocast(model, dtype)
    x = torch.rand(64, 3, 32, 32).contiguous(memory_format=CL)
    y = torch.randint(0, 10, (64,))

    def step():
        v = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(attacked(v), y), v)
    return step


def lime_batch(arch: str, dtype) -> callable:
    from igdefense.attribution import attribute, segment

    model = _model(arch).eval()
    queried = model if dtype == torch.float32 else Autocast(model, dtype)
    x = torch.rand(4, 3, 32, 32)
    segments = segment(x)

    def run():
        attribute(queried, x, segments, torch.zeros(4, dtype=torch.long), method="lime", num_samples=250)
    return run


WORKS = {"train_step": train_step, "forward": forward, "defended_forward": defended_forward,
         "apgd_step": apgd_step, "lime_batch": lime_batch}


def gemm_ratio(repeats: int) -> dict:
    a32, b32 = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a16, b16 = a32.bfloat16(), b32.bfloat16()
    t = interleaved({"fp32": lambda: a32 @ b32, "bf16": lambda: a16 @ b16}, repeats)
    flops = 2 * 2048 ** 3
    return {"fp32_gflops": round(flops / t["fp32"] / 1e9, 1), "bf16_gflops": round(flops / t["bf16"] / 1e9, 1),
            "ratio": float(f"{t['fp32'] / t['bf16']:.3g}")}  # (3 digits: without a bf16 unit it is ~0.002)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="preact-resnet18,smallcnn")
    ap.add_argument("--works", default=",".join(WORKS))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--name", default="precision", help="writes benchmarks/results/NAME.json (default precision)")
    args = ap.parse_args()
    torch.set_num_threads(2)
    gemm = gemm_ratio(args.repeats)
    print(f"ceiling: a 2048^3 matrix product, {gemm['fp32_gflops']} GFLOP/s in float32, {gemm['bf16_gflops']} in "
          f"bfloat16: {gemm['ratio']}x")
    rows = []
    for arch in args.archs.split(","):
        for work in args.works.split(","):
            fns = {name: WORKS[work](arch, dtype) for name, dtype in (("fp32", torch.float32),
                                                                       ("bf16", torch.bfloat16))}
            t = interleaved(fns, args.repeats)
            ratio = t["fp32"] / t["bf16"]
            rows.append({"arch": arch, "work": work, "fp32_s": round(t["fp32"], 4), "bf16_s": round(t["bf16"], 4),
                         "ratio": float(f"{ratio:.3g}"), "of_ceiling": float(f"{ratio / gemm['ratio']:.3g}")})
            print_table(rows[-1:], list(rows[-1]))
    print_table(rows, list(rows[0]))
    flags = bf16_units()
    path = write_results(args.name, {
        "cpu_bf16_units": flags, "auto_chooses_bf16": bool(flags) and cpu_bf16_is_faster(), "threads": 2,
        "gemm_ceiling": gemm, "rows": rows})
    print("wrote", path)


if __name__ == "__main__":
    main()
