"""Private helpers for hooks on a model: neuron masks, hook cleanup, eval mode, device and dtype."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

def neuron_axis(ndim: int) -> int:
    """Axis holding the neurons: channels for (B,C) and (B,C,H,W), features for tokens (B,T,D)."""
    return -1 if ndim == 3 else 1


def apply_neuron_mask(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Multiply features (B, ...) by a per-row neuron mask (B, neurons), broadcasting over H, W or tokens."""
    shape = [mask.shape[0]] + [1] * (features.ndim - 1)
    shape[neuron_axis(features.ndim)] = mask.shape[1]
    return features * mask.view(shape)


def model_device(model: nn.Module) -> torch.device:
    """Device of the model's first parameter, else buffer (CPU for a model with neither)."""
    p = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


def model_dtype(model: nn.Module) -> torch.dtype:
    """Floating dtype of the model's first floating parameter (float32 for a parameter-free model)."""
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)


@contextmanager
def hooks(handles: list) -> Iterator[list]:
    """Remove every hook handle appended to ``handles`` on exit, even when the body raises."""
    try:
        yield handles
    finally:
        for h in handles:
            h.remove()
        handles.clear()


def module_modes(model: nn.Module) -> dict[nn.Module, bool]:
    """Every module's training flag, for :func:`restore_modes`: ``model.train(was)`` would set one flag
    on all of them (a wrapper left in train mode would put the user's eval-mode model in train mode)."""
    return {m: m.training for m in model.modules()}


def restore_modes(modes: dict[nn.Module, bool]) -> None:
    for m, training in modes.items():
        m.training = training


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    modes = module_modes(model)
    model.eval()
    try:
        yield
    finally:
        restore_modes(modes)
