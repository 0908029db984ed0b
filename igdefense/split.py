"""Split a classifier into features and head: find the layer the defense masks.

The penultimate layer is the input of the final classifier layer reached in forward order (a
``Linear``, or a 1x1 ``Conv2d`` as in SqueezeNet-style and some timm heads). It is found by
running the model once with forward hooks on every module, so it works through wrappers such
as RobustBench's ``Sequential(normalizer, model)`` and on models whose classifier is not the
last registered module. An explicit ``layer="name"`` selects the *output* of that module instead.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Literal

import torch
from torch import nn

from ._hooks import eval_mode, hooks, model_device, neuron_axis


class SplitError(ValueError):
    """The model cannot be split at a maskable layer."""


@dataclass(frozen=True)
class Site:
    """Where the mask is applied: the ``input`` or ``output`` of the module named ``module``."""

    module: str
    at: Literal["input", "output"]

    def __str__(self) -> str:
        return f"{self.module}:{self.at}"

    def register(self, model: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]):
        """Hook ``fn`` to rewrite the tensor at this site of ``model``; returns the handle."""
        module = model.get_submodule(self.module)
        if self.at == "output":
            return module.register_forward_hook(lambda m, args, out: fn(out))
        return module.register_forward_pre_hook(lambda m, args: (fn(args[0]), *args[1:]))

    @classmethod
    def parse(cls, text: str) -> "Site":
        module, _, at = text.rpartition(":")
        if at not in ("input", "output") or not module:
            raise ValueError(f"bad layer site {text!r}: expected 'module.name:input' or 'module.name:output'")
        return cls(module, at)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Split:
    """Where a model is split. ``fast`` means the head's output *is* the model's output, so the
    defense can run the backbone once and apply only the head twice."""

    site: Site
    head: str  # name of the final classifier module
    num_neurons: int
    num_classes: int
    fast: bool


def _is_classifier(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1


def head_fingerprint(model: nn.Module, head: str) -> str:
    """A short hash of the head's parameters: rankings made for another head fail to load (the backbone
    is not hashed: rankings kept after it changed under the same head load; docs/checks.md)."""
    h = hashlib.sha256()
    for name, p in sorted(model.get_submodule(head).named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def find_split(model: nn.Module, example: torch.Tensor, layer: str | Site | None = None) -> Split:
    """Locate the penultimate layer (or ``layer``) by running ``model`` once on ``example``.

    Args:
        model: any classifier returning logits of shape (B, classes).
        example: a small input batch (one image is enough), in the model's input format, on any device
            (it is moved to the model's).
        layer: None for the input of the final classifier layer; a module name for that
            module's output; or a :class:`Site`.
    Raises:
        SplitError: no classifier layer found, or the chosen layer cannot be masked; the message
            names the candidate layers and says to pass ``layer=``.
    """
    names = {m: n for n, m in model.named_modules()}
    calls: list[tuple[str, nn.Module, torch.Tensor, torch.Tensor]] = []

    def record(m, args, out):
        if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            # (a classifier's output copied: an in-place op after it would change what `fast` compares)
            calls.append((names[m], m, args[0], out.clone() if _is_classifier(m) else out))

    with hooks([]) as hs, eval_mode(model), torch.no_grad():
        hs += [m.register_forward_hook(record) for m in model.modules() if m is not model]
        logits = model(example[:1].to(model_device(model)))
    if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
        raise SplitError(f"model output must be a (batch, classes) tensor, got {type(logits).__name__} "
                         f"{tuple(getattr(logits, 'shape', ()))}")
    num_classes = logits.shape[1]
    classifiers = [c for c in calls if _is_classifier(c[1])]
    if not classifiers:
        leaves = [n for n, m, _, o in calls if not list(m.children())][-8:]
        raise SplitError("no Linear or 1x1 Conv2d classifier layer is reached in the forward pass; "
                         f"last layers run: {leaves}. Pass layer='<module name>' to choose one.")
    head_name, head, head_in, head_out = classifiers[-1]
    if sum(c[0] == head_name for c in calls) > 1:
        raise SplitError(f"classifier {head_name!r} is called more than once per forward; pass layer=")
    fast = head_out.numel() == logits.numel() and torch.equal(head_out.reshape(logits.shape), logits)
    heads = [c[0] for c in classifiers if c[3].ndim == 2 and c[3].shape[-1] == num_classes]
    if not fast and layer is None and len(heads) > 1:
        # (an ensemble, or a distilled ViT's two token heads: masking the last would leave the others unmasked)
        raise SplitError(f"{len(heads)} classifier layers output the {num_classes} classes ({heads}) and the model "
                         f"combines them: the defense would mask the last one only. Pass layer='<module name>' "
                         "to choose the one feature layer that feeds every class score")
    if not fast and layer is None and head_out.shape[-1] != num_classes and head_out.ndim == 2:
        candidates = [c[0] for c in classifiers[-4:]]
        raise SplitError(f"the last classifier-like layer {head_name!r} outputs {head_out.shape[-1]} "
                         f"values but the model outputs {num_classes} classes; candidates: {candidates}. "
                         "Pass layer='<module name>' to choose the feature layer.")

    if layer is None:
        site, feats = Site(head_name, "input"), head_in
    else:
        site = layer if isinstance(layer, Site) else Site(layer, "output")
        found = [c for c in calls if c[0] == site.module]
        if not found:
            known = [n for n, _ in model.named_modules() if n][:12]
            raise SplitError(f"layer {site.module!r} is not run in the forward pass; module names "
                             f"look like {known}")
        if len(found) > 1:
            raise SplitError(f"layer {site.module!r} runs {len(found)} times per forward; choose another")
        feats = found[0][2] if site.at == "input" else found[0][3]
        fast = fast and site == Site(head_name, "input")
    if feats.ndim not in (2, 3, 4):
        raise SplitError(f"features at {site} have shape {tuple(feats.shape)}; expected 2-, 3- or 4-D")
    return Split(site, head_name, feats.shape[neuron_axis(feats.ndim)], num_classes, bool(fast))
