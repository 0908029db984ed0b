"""Models that ship with igdefense (or inside its dependencies), loadable offline.

    igdefense.zoo.available()                 # names
    model = igdefense.zoo.load(name)          # eval-mode nn.Module taking [0,1] images
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from torch import nn

_REGISTRY: dict[str, Callable[[], nn.Module]] = {}
WEIGHTS_DIR = Path(__file__).parent / "weights"


def register(name: str):
    def deco(fn: Callable[[], nn.Module]):
        _REGISTRY[name] = fn
        return fn
    return deco


def available() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(_REGISTRY)


def load(name: str) -> nn.Module:
    """An eval-mode CIFAR-10 classifier taking (B,3,32,32) images in [0,1]."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}; available: {available()}")
    return _REGISTRY[name]().eval()


@register("pyautoattack-resnet18")
def _pyautoattack_resnet18() -> nn.Module:
    """pyautoattack 0.2.0's example CIFAR-10 ResNet-18 (standard training, no normalisation layer)."""
    from pyautoattack.examples.resnet import ResNet18
    import pyautoattack.examples as ex

    model = ResNet18()
    state = torch.load(Path(list(ex.__path__)[0]) / "model_test.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(state)
    return model
