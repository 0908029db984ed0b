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


def _close(name: str, names: list[str]) -> str:
    import difflib

    close = difflib.get_close_matches(name, names, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def load(name: str) -> nn.Module:
    """An eval-mode CIFAR-10 classifier taking (B,3,32,32) images in [0,1]."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown model {name!r}{_close(name, available())}; available: {available()}")
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


def _register_trained(name: str) -> None:
    weights = WEIGHTS_DIR / f"{name}.safetensors"
    if not weights.exists():
        return

    def build() -> nn.Module:
        from .weights_file import load_weights

        return load_weights(weights)  # (float16 files, as the paper-scale ResNet-18 ships, load as float32)

    build.__doc__ = f"trained by igdefense's recipe; model card: {weights.with_suffix('.md').name}"
    register(name)(build)


for _name in ("smallcnn-robust", "smallcnn-standard", "smallcnn-refined", "preact-resnet18-robust"):
    _register_trained(_name)


def with_rankings() -> list[str]:
    """Models that ship precomputed rankings (see :func:`rankings`)."""
    return [n for n in available() if (WEIGHTS_DIR / f"{n}.lo-ir.safetensors").exists()]


def rankings(name: str):
    """The LO-IR rankings shipped for zoo model ``name`` (computed on the full training split)."""
    from ..rankings import Rankings

    path = WEIGHTS_DIR / f"{name}.lo-ir.safetensors"
    if not path.exists():
        raise KeyError(f"no rankings ship for {name!r}{_close(name, with_rankings())}; models with rankings: "
                       f"{with_rankings()}")
    return Rankings.load(path)


def tuned_setting(name: str) -> Path | None:
    """The file of a zoo model's tuned IG-Defense setting (its sweep's best, confirmed on 1,000 images:
    README, results), read by :meth:`igdefense.specs.DefenseSpec.for_model`; None: the paper's defaults."""
    path = WEIGHTS_DIR / f"{name}.defense.json"
    return path if path.exists() else None


def default_model() -> str:
    """The model ``igdefense demo`` uses: the shipped robust one when present."""
    return "smallcnn-robust" if "smallcnn-robust" in _REGISTRY else "pyautoattack-resnet18"
