"""How two background jobs should share two cores: threads per job, and the memory format in float32.

Each job is one attack step on the zoo's PreAct ResNet-18 (forward and backward to the input, batch 25,
float32: what `benchmarks/paper_scale_eval.sh` repeats for hours), run for a fixed time in its own
process. Measured, in one run: one job alone with 2 threads and with 1; two jobs at once with 2 threads
each and with 1 each (total steps per second of both); one job with 2 threads in channels-last. The
floor: two one-thread jobs can at best do twice the steps of one (``of_floor`` is how close they come).

    python benchmarks/background_threads.py   # ~3 min; pause background runs first
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_results  # noqa: E402


def worker(threads: int, channels_last: bool, seconds: float) -> None:
    import torch
    import torch.nn.functional as F

    from igdefense import zoo

    torch.set_num_threads(threads)
    model = zoo.load("preact-resnet18-robust").eval()
    x, y = torch.rand(25, 3, 32, 32), torch.arange(25) % 10
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)

    def step():
        xa = x.clone().requires_grad_(True)
        torch.autograd.grad(F.cross_entropy(model(xa), y), xa)

    step()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    print(steps / (time.perf_counter() - start))


def jobs(n: int, threads: int, seconds: float, channels_last: bool = False) -> float:
    """Total steps per second of ``n`` jobs running at once."""
    cmd = [sys.executable, __file__, "--worker", str(threads), str(int(channels_last)), str(seconds)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(n)]
    return sum(float(p.communicate()[0].split()[-1]) for p in procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=25.0, help="how long each measurement runs")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(int(args.worker[0]), bool(int(args.worker[1])), float(args.worker[2]))
        return
    s = args.seconds
    rate = {"one_job_2_threads": jobs(1, 2, s), "one_job_1_thread": jobs(1, 1, s),
            "two_jobs_2_threads_each": jobs(2, 2, s), "two_jobs_1_thread_each": jobs(2, 1, s),
            "one_job_2_threads_channels_last": jobs(1, 2, s, channels_last=True)}
    payload = {"steps_per_second": {k: round(v, 3) for k, v in rate.items()},
               "two_jobs_2_threads_vs_1_thread": round(rate["two_jobs_2_threads_each"] / rate["two_jobs_1_thread_each"], 3),
               "two_jobs_1_thread_of_floor": round(rate["two_jobs_1_thread_each"] / (2 * rate["one_job_1_thread"]), 3),
               "channels_last_vs_nchw": round(rate["one_job_2_threads_channels_last"] / rate["one_job_2_threads"], 3)}
    for k, v in payload.items():
        print(k, v)
    print("wrote", write_results("background_threads", payload))


if __name__ == "__main__":
    main()
