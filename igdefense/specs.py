"""What a command names, one typed object each: the model, the data, the defense.

Each is a frozen dataclass: one place for its defaults, a JSON round trip (``to_json`` /
``from_json``, which refuses unknown keys and wrong types in one line), and, in each field's
metadata, its command-line option's help and value type (the command line makes its options from them). A sweep's best setting is a
saved ``DefenseSpec``; reports print the setting they used.

    model = ModelSpec("smallcnn-refined").load()
    defense = DefenseSpec.for_model("smallcnn-refined")     # its tuned setting: sigma 8/255
    defended = defense.build(model, defense.rankings_for(model, "smallcnn-refined", DataSpec()))
"""

from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from . import zoo
from ._hooks import model_device, model_dtype
from .atomic import atomic_write
from .parse import count, natural, one_of, radius, real, whole
from ._validation import MAX_SIDE, json_loads
from .data import CIFAR10, DATA_FORMS, ORDERS, balanced_loader, open_dataset
from .defense import DEFAULT_SHARE, SIGMA, TAU, IGDefense
from .models import load_model, model_source, model_sources
from .rankings import Rankings
from .rankings.cache import cached_lo_ir


def option(help: str, parse=None, flag: str | None = None) -> dict:
    """A field's command-line option: its help, its value type (default: the field's type), its flag
    (default: --field-name)."""
    return {"help": help, "parse": parse, "flag": flag}


class Spec:
    """The JSON round trip and the command-line options every spec shares."""

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, values: Any, where: str = "the settings"):
        if not isinstance(values, dict):
            raise ValueError(f"{where}: expected a JSON object of {cls.__name__} fields, got {type(values).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ValueError(f"{where}: unknown {cls.__name__} field(s) {unknown}; known: {sorted(fields)}")
        hints = typing.get_type_hints(cls)
        for name, value in values.items():
            if not _fits(value, hints[name]):
                raise ValueError(f"{where}: {name}={value!r} is not a {_type_name(hints[name])}")
        return cls(**values)


def _fits(value: Any, hint) -> bool:
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for kind in kinds:
        if value is None and kind is type(None):
            return True
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if kind in (int, str) and isinstance(value, kind) and not isinstance(value, bool):
            return True
    return False


def _type_name(hint) -> str:
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    return " or ".join("null" if k is type(None) else k.__name__ for k in kinds)


@dataclass(frozen=True)
class ModelSpec(Spec):
    """A classifier by name (:func:`igdefense.models.load_model`) and the options that go with it."""

    name: str = field(default_factory=zoo.default_model, metadata=option(
        ", ".join(s.usage for s in model_sources()) + "; the model takes [0,1] images (normalisation inside it)",
        flag="--model"))
    model_dir: str | None = field(default=None, metadata=option(
        "RobustBench's model folder: <dir>/<dataset>/<threat>/NAME.pt is read, downloaded only when missing "
        "(default ./models)"))
    dataset: str = field(default="cifar10", metadata=option("the RobustBench model's dataset: cifar10, cifar100 or "
                                                             "imagenet"))
    threat_model: str = field(default="Linf", metadata=option("the RobustBench model's threat model: Linf, L2 or "
                                                               "corruptions"))
    checkpoint: str | None = field(default=None, metadata=option(
        "state dict for torchvision:NAME / timm:NAME (read with torch.load(weights_only=True): tensors only, no code)"))
    num_classes: int | None = field(default=None, metadata=option("classifier outputs of the checkpoint's model",
                                                                  count))

    def load(self) -> nn.Module:
        return load_model(self.name, model_dir=self.model_dir, dataset=self.dataset, threat_model=self.threat_model,
                          checkpoint=self.checkpoint, num_classes=self.num_classes)

    def to_json(self) -> dict:
        resolve = lambda v: None if v is None else str(Path(v).resolve())  # noqa: E731  (rebuilt from elsewhere)
        return {**super().to_json(), "model_dir": resolve(self.model_dir), "checkpoint": resolve(self.checkpoint)}

    @property
    def names_a_file(self) -> bool:
        """A model *file* (path.py:factory, weights): loading it reads, or runs, what that file holds."""
        try:
            return model_source(self.name).names_a_file
        except ValueError:  # (no source: taken for a file, the careful side)
            return True


@dataclass(frozen=True)
class DataSpec(Spec):
    """The images ``--data`` names, for every command (see ``DATA_FORMS``), and the class-balanced
    selection every command takes from them (:func:`igdefense.data.balanced_indices`)."""

    source: str | None = field(default=None, metadata=option(
        "the images: " + "; ".join(DATA_FORMS) + " (class-balanced subsets)", flag="--data"))
    image_size: int = field(default=224, metadata=option(
        "image folders: side of the centre crop, after resizing the shorter side to size / 0.875",
        whole(8, MAX_SIDE)))
    order: str = field(default="class", metadata=option(
        "the test images' order: class (every class's together) or round-robin (the first of every class, then the "
        "second, ...: the first 500 images of a 1,000-image run are the 500-image run, so its logs extend from "
        "--images 500 to 1000)", one_of(*ORDERS)))

    offset: int = field(default=0, metadata=option(
        "leave out the first N test images of each class: evaluate a sweep's best setting on images the sweep did not "
        "choose it on (a sweep of 500 CIFAR-10 images takes the first 50 per class: eval --offset 50)", natural))

    def __post_init__(self):
        if self.order not in ORDERS:  # (a crafted report's specs)
            raise ValueError(f"data order {self.order!r}: expected one of {', '.join(ORDERS)}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) or self.offset < 0:
            raise ValueError(f"data offset {self.offset!r}: expected a whole number >= 0")

    def open(self, split: str):
        return open_dataset(self.source, split, image_size=self.image_size)

    def selection(self) -> str:
        """How the images are taken, as a report says it."""
        order = "by class" if self.order == "class" else "round robin over the classes"
        return f"class-balanced (ordered {order})" + (f", leaving out the first {self.offset} of each class"
                                                      if self.offset else "")

    def loader(self, split: str, n: int | None = None, *, per_class: int | None = None, batch_size: int = 250):
        """(loader, dataset): ``n`` class-balanced images of the split (or ``per_class`` of each class),
        in this spec's order."""
        data = self.open(split)
        return balanced_loader(data, n, batch_size, per_class=per_class, order=self.order, offset=self.offset), data

    def cifar10(self, split: str, command: str) -> CIFAR10:
        """The split as CIFAR-10, for commands that are CIFAR-10's alone; one line when ``--data`` is other images."""
        data = self.open(split)
        if type(data) is not CIFAR10:
            raise ValueError(f"igdefense {command} works on CIFAR-10 only, and --data {self.source} is "
                             f"{data.description}: pass a CIFAR-10 source or leave --data out")
        return data


@dataclass(frozen=True)
class DefenseSpec(Spec):
    """IG-Defense's settings (:class:`igdefense.IGDefense`), in one unit each, and where its rankings
    come from. A tuned setting (a sweep's best) is one such file: ``wrap(model, "defense.json")``."""

    k: int | None = field(default=None, metadata=option(
        "neurons kept per class (default: 10%% of the masked layer's, rounded)", count))
    share: float | None = field(default=None, metadata=option(
        "or the neurons kept per class as a share of the masked layer's, e.g. 0.05 (not with --k)", real(0, 1)))
    sigma: float = field(default=SIGMA, metadata=option("pass-1 noise std, e.g. 8/255 (the paper: 4/255)", radius))
    tau: float = field(default=TAU, metadata=option("pseudo-label softmax temperature", real(1e-6)))
    n_samples: int = field(default=1, metadata=option("noise draws averaged for the pseudo-label", count))
    rankings: str | None = field(default=None, metadata=option(
        "rankings file (default: the model's shipped ones, else LO-IR on --probe-per-class training images per "
        "class of --data, cached)"))
    probe_per_class: int = field(default=200, metadata=option("LO-IR probe images per class", count))
    origin: str = field(default="", metadata=option("where this setting comes from (shown in reports)"))

    @classmethod
    def for_model(cls, name: str) -> "DefenseSpec":
        """The setting a model is defended with unless told otherwise: its tuned one (the zoo's), else the defaults."""
        path = zoo.tuned_setting(name)
        return cls() if path is None else cls.load(path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DefenseSpec":
        """A setting saved by :meth:`save` (a sweep's ``defense.json``); its rankings path is relative to it."""
        path = Path(path)
        try:
            values = json_loads(path.read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"{path} is not a readable defense setting (JSON): {e}") from e
        spec = cls.from_json(values, where=str(path))
        if spec.rankings is not None and not Path(spec.rankings).is_absolute():
            spec = dataclasses.replace(spec, rankings=str(path.parent / spec.rankings))
        return spec

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        values = self.to_json()
        if self.rankings is not None:  # relative to the file where it can be: the folder moves as one
            try:
                values["rankings"] = os.path.relpath(Path(self.rankings).resolve(), path.parent.resolve())
            except ValueError:  # (another drive)
                values["rankings"] = str(Path(self.rankings).resolve())
        atomic_write(path, json.dumps(values, indent=1) + "\n")
        return path

    def rankings_for(self, model: nn.Module, name: str, data: DataSpec) -> Rankings:
        """The rankings file named, else the zoo model's shipped rankings, else LO-IR on the first
        ``probe_per_class`` training images per class of ``data``, cached (keyed by the weights and the images)."""
        if self.rankings is not None:
            return Rankings.load(self.rankings)
        if name in zoo.with_rankings():
            return zoo.rankings(name)
        train = data.open("train")
        outputs = check_classes(model, train)
        names = list(train.classes) if len(train.classes) == outputs else None
        return cached_lo_ir(model, train, self.probe_per_class, name=name, class_names=names)

    def build(self, model: nn.Module, rankings: Rankings | str | os.PathLike, seed: int | None = None,
              **options) -> IGDefense:
        """The defended model in eval mode: the one path from a setting to an :class:`IGDefense`
        (``options``: its other arguments, e.g. ``precision``)."""
        return IGDefense(model, rankings, k=self.k, share=self.share, sigma=self.sigma, tau=self.tau,
                         n_samples=self.n_samples, seed=seed, **options).eval()

    def describe(self, defended: IGDefense | None = None) -> str:
        k = f"k={defended.k}/{defended.split.num_neurons}" if defended is not None else \
            f"k={self.k if self.k is not None else f'{100 * (self.share or DEFAULT_SHARE):g}%'}"
        text = f"{k}, sigma={255 * self.sigma:g}/255, tau={self.tau:g}, {self.n_samples} noise draw(s)"
        return text + (f" ({self.origin})" if self.origin else "")


def wrap(model: nn.Module, rankings: Rankings | str | os.PathLike, **kwargs) -> IGDefense:
    """One-liner: ``defended = igdefense.wrap(model, "rankings.safetensors", k=50)`` (in eval mode).
    ``rankings`` may also be a setting file (``defense.json``, a sweep's best): its rankings and
    settings, with ``kwargs`` (e.g. ``seed=0``) put over them."""
    if str(rankings).endswith(".json"):
        spec = DefenseSpec.load(rankings)
        if spec.rankings is None:
            raise ValueError(f"{rankings} names no rankings file: pass the rankings, and its settings as keywords")
        ours = {k: kwargs.pop(k) for k in ("k", "share", "sigma", "tau", "n_samples") if k in kwargs}
        return dataclasses.replace(spec, **ours).build(model, spec.rankings, **kwargs)
    return IGDefense(model, rankings, **kwargs).eval()


def check_classes(model: nn.Module, data) -> int:
    """The model's number of outputs; one line when the data's labels do not fit them (e.g. CIFAR-100
    for a CIFAR-10 model)."""
    x = data.__getitems__([0])[0]
    with torch.no_grad():
        outputs = model(x.to(model_dtype(model)).to(model_device(model))).shape[-1]
    top = int(np.max(data.labels))
    if top >= outputs:
        raise ValueError(f"{data.description} has labels up to {top}, but the model has {outputs} outputs: "
                         "--data and --model do not belong together")
    return outputs
