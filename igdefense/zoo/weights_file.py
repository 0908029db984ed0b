"""The weights files ``igdefense train`` writes and the zoo ships: safetensors whose metadata holds the
training config (the architecture is built from it, nothing is unpickled); the zoo's paper-scale
ResNet-18 ships as float16."""

from __future__ import annotations

import json
import os

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from ..atomic import atomic_path
from .._validation import json_loads
from .models import ARCHITECTURES, SmallCNN


def load_weights(path: str | os.PathLike) -> nn.Module:
    """The eval-mode model a file written by :func:`train` (or ``igdefense refine``) holds, built from
    the config in its metadata (files without an ``arch`` are SmallCNNs)."""
    try:
        with safe_open(str(path), "pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is not a safetensors file igdefense train wrote ({e})") from e
    if "config" not in meta:  # (files of igdefense's other kinds: rankings, state files)
        kind = " (it is a rankings file: pass it as --rankings)" if _is_rankings(path) else ""
        raise ValueError(f"{path} is not a weights file igdefense train wrote: its metadata holds no training "
                         f"config{kind}")
    try:
        config = json_loads(meta["config"])
        arch, widths = config.get("arch", "smallcnn"), tuple(config.get("widths", (32, 64, 128)))
        if arch not in ARCHITECTURES or len(widths) != 3 or not all(isinstance(w, int) and w > 0 for w in widths):
            raise ValueError(f"arch {arch!r}, widths {widths}")
    except (ValueError, AttributeError, TypeError) as e:
        raise ValueError(f"{path}: its metadata does not name a model igdefense builds ({e})") from e
    model = SmallCNN(widths) if arch == "smallcnn" else ARCHITECTURES[arch]()
    try:
        model.load_state_dict(load_file(str(path)))
    except RuntimeError as e:  # missing, unexpected or misshapen tensors
        detail = " ".join(str(e).split())  # (torch's message spans lines: its first ends in a colon)
        raise ValueError(f"{path}: its tensors do not fit the {arch} its metadata names: "
                         f"{detail[:300]}{'...' if len(detail) > 300 else ''}") from e
    return model.eval()


def save_half(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Write the weights file ``src`` (:func:`train`'s) as float16, its metadata kept: how the zoo ships
    its paper-scale ResNet-18 (half the bytes). :func:`load_weights` gives it back as a float32 model,
    and that model, not ``src``'s, is what the zoo's results are bound to."""
    with safe_open(str(src), "pt") as f:
        meta = f.metadata() or {}
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in load_file(str(src)).items()}
    if not all(torch.isfinite(v).all() for v in tensors.values() if v.is_floating_point()):
        raise ValueError(f"{src} holds values beyond float16's range: it cannot ship as float16")
    with atomic_path(dst) as tmp:
        save_file(tensors, str(tmp), metadata={**meta, "stored": "float16"})


def _is_rankings(path) -> bool:
    from ..rankings import Rankings, RankingsError

    try:
        Rankings.load(path)
    except RankingsError:
        return False
    return True


def architecture_of(model: nn.Module) -> dict | None:
    """``{"arch", "widths"}`` of a zoo architecture (what :func:`load_weights` rebuilds it from), or None
    for a model of another kind."""
    if type(model) is SmallCNN:
        convs = [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)]
        return {"arch": "smallcnn", "widths": convs[::2]}
    arch = next((name for name, cls in ARCHITECTURES.items() if type(model) is cls), None)
    return None if arch is None else {"arch": arch}


def save_weights(model: nn.Module, path: str | os.PathLike, config: dict, **metadata: str) -> None:
    """Write ``model``'s weights as a file :func:`load_weights` reads back: ``config`` (the recipe's
    settings) is stored with the model's architecture, so the file alone rebuilds the model."""
    arch = architecture_of(model)
    if arch is None:
        raise ValueError(f"a {type(model).__name__} is not one of the zoo's architectures "
                         f"({', '.join(ARCHITECTURES)}): its weights file could not be loaded back")
    with atomic_path(path) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(tmp),
                  metadata={"config": json.dumps({**config, **arch}), **metadata})
