"""The one precision policy: which dtype a job computes in on a device.

``"fp32"`` computes in float32. ``"bf16"`` runs the model's convolutions and matrix products under
bfloat16 autocast (channels-last weights and images); master weights, optimizer state, losses,
softmaxes and every reported number stay float32. ``"auto"`` is bfloat16 on a GPU that supports it
and on a CPU whose flags show a bfloat16 matrix unit (AMX-BF16 or AVX512-BF16) *and* where a
measured convolution step is faster in bfloat16 than in float32; float32 elsewhere (without those
units, CPU autocast is slower than float32).
"""

from __future__ import annotations

import functools
import logging
import time
from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags() -> set[str]:
    """The CPU's feature flags (``/proc/cpuinfo``; empty where it cannot be read)."""
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), []))
    except OSError:
        return set()


def bf16_units(flags: set[str] | None = None) -> list[str]:
    """The CPU's bfloat16 matrix units among :data:`BF16_CPU_FLAGS`, as ``/proc/cpuinfo`` names them."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in BF16_CPU_FLAGS if f in flags]


def _median_seconds(fn, repeats: int = 5) -> float:
    fn()  # warm-up: oneDNN picks and compiles its kernels on the first call
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return sorted(times)[len(times) // 2]


@functools.cache
def cpu_bf16_is_faster() -> bool:
    """Whether a ResNet-sized convolution's forward and backward (64 channels, 32x32, batch 32) runs
    faster under bfloat16 autocast than in float32 on this CPU (measured once per process, ~0.3 s)."""
    conv = nn.Conv2d(64, 64, 3, padding=1, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(32, 64, 32, 32).contiguous(memory_format=torch.channels_last)

    def step(dtype):
        with autocast(dtype, torch.device("cpu")):
            conv(x).float().sum().backward()

    return _median_seconds(lambda: step(torch.bfloat16)) < _median_seconds(lambda: step(torch.float32))


def check_precision(precision: str) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    return precision


def compute_dtype(precision: str, device: torch.device | str) -> torch.dtype:
    """The dtype a job asked to compute in ``precision`` uses on ``device`` (see the module's text)."""
    device = torch.device(device)
    if check_precision(precision) != "auto":
        dtype = _DTYPES[precision]
        if dtype == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"{torch.cuda.get_device_name(device)} has no bfloat16: use precision fp32 (or auto)")
        if dtype == torch.bfloat16 and device.type == "cpu" and not bf16_units():
            _warn_emulated_bf16()
        return dtype
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu" and bf16_units() and cpu_bf16_is_faster():
        return torch.bfloat16
    return torch.float32


@functools.cache
def _warn_emulated_bf16() -> None:  # (once per process)
    log.warning("bf16 on a CPU without a bfloat16 unit (no AMX-BF16 or AVX512-BF16 flag) is emulated: 7-24x slower "
                "than fp32 on such a machine (benchmarks/results/precision-avx2.json); auto picks fp32 here")


def precision_name(dtype: torch.dtype) -> str:
    """``"fp32"`` or ``"bf16"``: how logs, checkpoints and reports name a compute dtype."""
    return next(name for name, d in _DTYPES.items() if d == dtype)


def autocast(dtype: torch.dtype, device: torch.device | str) -> AbstractContextManager:
    """The context a model's forward runs in to compute in ``dtype`` (nothing for float32)."""
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)


class Autocast(nn.Module):
    """``model`` computing under autocast in ``dtype``, its outputs given back in float32: what an
    attack crafting in bfloat16 calls, so that its losses and steps stay float32. Other attributes
    (a randomized defense's ``reseed``, ``smooth_gradients``) are the model's."""

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model, self.dtype = model, dtype

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with autocast(self.dtype, x.device):
            out = self.model(x, *args, **kwargs)
        return out.float()

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)
