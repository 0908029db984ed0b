"""Any classifier by one name, as the command line takes it (``--model SPEC``).

    zoo name                 smallcnn-robust, smallcnn-standard, pyautoattack-resnet18 (igdefense.zoo)
    robustbench:NAME         RobustBench's model zoo: read from model_dir/<dataset>/<threat_model>/NAME.pt,
                             downloaded only when that file is missing (RobustBench's own rule)
    torchvision:NAME         torchvision.models.get_model(NAME): the checkpoint's weights, or without one
    timm:NAME                the pretrained ones (downloaded once into torch's / Hugging Face's cache)
    path/to/file.py:factory  factory() from that file, returning an nn.Module (this runs the file: code you name)
    path/to/W.safetensors    weights written by ``igdefense train`` (the architecture named in the file's metadata)

Every model takes [0, 1] images: RobustBench models normalise inside themselves; pretrained
torchvision / timm weights get their own mean and std put in front; for a checkpoint or a file,
``normalize=(mean, std)`` does it (None: the model takes [0, 1] images as they are).
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import pickle
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from . import zoo
from ._validation import check_file

class Normalized(nn.Module):
    """``model((x - mean) / std)``: a model trained on normalised inputs, taking [0, 1] images."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model((x - self.mean) / self.std)


@dataclass(frozen=True)
class ModelSource:
    """One way of naming a model: ``usage`` as the help shows it, ``matches(spec)``, ``load(spec,
    **options)`` (the options of :func:`load_model` it takes: ``options``), and whether the spec names
    a local file (``names_a_file``: a Python file runs when loaded, so a spec read from a file's
    metadata is never loaded when it names one)."""

    usage: str
    matches: Callable[[str], bool]
    load: Callable[..., nn.Module]
    options: tuple[str, ...] = ()
    names_a_file: bool = False


_SOURCES: list[ModelSource] = []


def register_model_source(usage: str, matches: Callable[[str], bool], *, options: tuple[str, ...] = (),
                          names_a_file: bool = False) -> Callable[[Callable], Callable]:
    """Decorator registering ``load(spec, **options)`` as a model source (as timm's ``register_model``);
    sources are tried in registration order, the zoo's names last."""
    def add(load: Callable) -> Callable:
        _SOURCES.append(ModelSource(usage, matches, load, tuple(options), names_a_file))
        return load
    return add


def model_sources() -> tuple[ModelSource, ...]:
    """The registered model sources, in the order they are tried."""
    return tuple(_SOURCES)


def model_source(spec: str) -> ModelSource:
    """The source a model name belongs to; one line naming every form when none matches."""
    for source in _SOURCES:
        if source.matches(spec):
            return source
    raise ValueError(f"unknown model {spec!r}: use " + ", ".join(s.usage for s in _SOURCES))


def load_model(spec: str, *, model_dir: str | os.PathLike | None = None, dataset: str = "cifar10",
               threat_model: str = "Linf", checkpoint: str | os.PathLike | None = None,
               num_classes: int | None = None,
               normalize: tuple[Sequence[float], Sequence[float]] | None = None) -> nn.Module:
    """The classifier named by ``spec`` (see the module docstring), in eval mode, taking [0, 1] images.

    Args:
        model_dir, dataset, threat_model: where and which RobustBench model (``robustbench:`` only).
        checkpoint: a state dict file (``{"state_dict": ...}`` and ``{"model": ...}`` too) for
            ``torchvision:`` / ``timm:``; None loads the pretrained weights.
        num_classes: the classifier's outputs when built from a checkpoint (default: the library's).
        normalize: (mean, std) per channel, put in front of a checkpoint's or a file's model.
    """
    source = model_source(spec)
    if checkpoint is not None and "checkpoint" not in source.options:
        raise ValueError(f"checkpoint= is for torchvision:NAME and timm:NAME models, not {spec!r}")
    given = {"model_dir": model_dir, "dataset": dataset, "threat_model": threat_model, "checkpoint": checkpoint,
             "num_classes": num_classes, "normalize": normalize}
    return source.load(spec, **{k: given[k] for k in source.options}).eval()


def _prefixed(prefix: str) -> Callable[[str], bool]:
    return lambda spec: spec.startswith(prefix + ":")


@register_model_source("robustbench:NAME", _prefixed("robustbench"), options=("model_dir", "dataset", "threat_model"))
def _robustbench_source(spec: str, model_dir, dataset: str, threat_model: str) -> nn.Module:
    return _robustbench(spec.partition(":")[2], model_dir, dataset, threat_model)


_LIBRARY_OPTIONS = ("checkpoint", "num_classes", "normalize")
register_model_source("torchvision:NAME", _prefixed("torchvision"), options=_LIBRARY_OPTIONS)(
    lambda spec, **options: _library_model("torchvision", spec.partition(":")[2], **options))
register_model_source("timm:NAME", _prefixed("timm"), options=_LIBRARY_OPTIONS)(
    lambda spec, **options: _library_model("timm", spec.partition(":")[2], **options))
register_model_source("path/to/file.py:factory (which runs that file: name only files you trust)",
                      lambda spec: ":" in spec and spec.split(":")[0].endswith(".py"),
                      options=("normalize",), names_a_file=True)(lambda spec, normalize: _from_file(spec, normalize))


@register_model_source("FILE.safetensors (written by igdefense train)", lambda spec: spec.endswith(".safetensors"),
                       names_a_file=True)
def _weights_file(spec: str) -> nn.Module:
    check_file(spec, "weights written by igdefense train")
    from .zoo.weights_file import load_weights

    return load_weights(spec)


def _robustbench(name: str, model_dir, dataset: str, threat_model: str) -> nn.Module:
    from .robustbench_compat import load_model as robustbench_load

    from robustbench.model_zoo import model_dicts  # the registry load_model reads

    known = {m for d in model_dicts.values() for models in d.values() for m in models}
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        raise ValueError(f"RobustBench has no model {name!r}" + (f"; did you mean {close}?" if close else ""))
    try:
        with warnings.catch_warnings():  # (torch's warning about a crafted file's pickle protocol: noise here)
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return robustbench_load(name, model_dir=model_dir or "./models", dataset=dataset, threat_model=threat_model)
    except pickle.UnpicklingError:  # (torch's own text advises weights_only=False: the one thing not to do)
        path = Path(model_dir or "./models") / dataset / threat_model / f"{name}.pt"
        raise ValueError(f"{path} is not a file of tensors torch.load reads safely; it was refused without running "
                         f"any of its code: delete it and let RobustBench download it again") from None


def _library_model(library: str, name: str, checkpoint, num_classes: int | None, normalize) -> nn.Module:
    if checkpoint is not None:
        check_file(checkpoint, "a checkpoint: a state dict saved with torch.save")
    kwargs = {"num_classes": num_classes} if num_classes else {}
    pretrained = checkpoint is None
    if library == "torchvision":
        import torchvision

        names = torchvision.models.list_models()
        if name not in names:
            raise ValueError(f"torchvision has no model {name!r}; close: {difflib.get_close_matches(name, names)}")
        weights = torchvision.models.get_model_weights(name).DEFAULT if pretrained else None
        model = torchvision.models.get_model(name, weights=weights, **kwargs)
        if pretrained:
            normalize = (weights.transforms().mean, weights.transforms().std)
    else:
        import timm

        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models())
            raise ValueError(f"timm has no model {name!r}; close: {close}")
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
        if pretrained:
            normalize = (model.pretrained_cfg["mean"], model.pretrained_cfg["std"])
    if checkpoint is not None:
        _load_state(model, checkpoint, num_classes)
    return Normalized(model, *normalize) if normalize else model


def _load_state(model: nn.Module, checkpoint, num_classes: int | None) -> None:
    try:
        with warnings.catch_warnings():  # (torch's warning about a crafted file's pickle protocol: noise here)
            warnings.simplefilter("ignore")
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as e:  # (UnpicklingError, RuntimeError, EOFError, ...: torch.load has no one error of its own)
        raise ValueError(f"{checkpoint} is not a file of tensors torch.load reads safely (torch.save of a state "
                         f"dict); it was refused without running any of its code ({type(e).__name__})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(f"{checkpoint} holds a {type(state).__name__}, not a state dict of named tensors "
                         f"(torch.save(model.state_dict(), path))")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # saved from DataParallel / DDP
    own = model.state_dict()
    wrong = [(k, tuple(v.shape), tuple(own[k].shape)) for k, v in state.items() if k in own and v.shape != own[k].shape]
    if wrong:
        key, theirs, ours = wrong[-1]
        hint = f": pass num_classes={theirs[0]} (--num-classes {theirs[0]})" if theirs[1:] == ours[1:] else ""
        raise ValueError(f"{checkpoint} does not fit the model: {key} has shape {theirs} there, {ours} here{hint}")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"{checkpoint} is for another architecture: missing {missing[:5]}, unexpected "
                         f"{unexpected[:5]}")


def _from_file(spec: str, normalize) -> nn.Module:
    path, _, factory = spec.rpartition(":")
    check_file(path, "expected path/to/file.py:factory")
    module_spec = importlib.util.spec_from_file_location(Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not callable(getattr(module, factory, None)):
        raise ValueError(f"{path} has no function {factory!r}")
    model = getattr(module, factory)()
    if not isinstance(model, nn.Module):
        raise TypeError(f"{spec} returned {type(model).__name__}, not an nn.Module")
    return Normalized(model, *normalize) if normalize else model


# (last: a zoo name is any other string; its list is the zoo's, read when asked)
register_model_source("a zoo name (" + ", ".join(zoo.available()) + ")", lambda spec: spec in zoo.available())(
    lambda spec: zoo.load(spec))
