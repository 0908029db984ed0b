"""What machine a measurement was made on (written beside benchmark and evaluation results)."""

from __future__ import annotations

import os
import platform

import torch

from .precision import cpu_flags


def machine() -> dict:
    cpu = "unknown"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    # the vector and matrix units a timing depends on (bfloat16 autocast: 2x faster with AVX512-BF16, 7-24x slower
    # with AVX2 alone: benchmarks/results/precision*.json)
    units = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    return {"cpu": cpu, "cpu_flags": units, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cuda": torch.cuda.is_available(), **({"gpu": torch.cuda.get_device_name()} if torch.cuda.is_available() else {})}
