"""LO-IR: leave-one-out importance ranking (Kulkarni & Weng, ECCV 2024, Sec. 3.2).

importance[c, j] = mean over probe images x of class c of |f_c(x) - f_c^(j)(x)|, where f^(j) is
the model with neuron j zeroed (the released code's absolute value).

At the penultimate layer (logits = W a + b) zeroing neuron j moves logit c by exactly
W[c, j] * a_j(x), so importance[c, j] = |W[c, j]| * mean_{x in c} |a_j(x)|: one pass over the
probe set instead of one per neuron ("closed" mode). Any other layer needs real ablation passes;
"ablation" mode runs them batched, ``neuron_batch`` neurons per forward.
"""

from __future__ import annotations

from typing import Iterable, Literal, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .._hooks import apply_neuron_mask, hooks, model_device, module_modes, restore_modes
from .._validation import check_images, check_labels
from ..split import Site, Split, find_split, head_fingerprint
from .format import Rankings

Mode = Literal["auto", "closed", "ablation"]


def _closed_form_applies(model: nn.Module, split: Split) -> bool:
    head = model.get_submodule(split.head)
    return split.fast and split.site == Site(split.head, "input") and isinstance(head, (nn.Linear, nn.Conv2d))


def _abs_features_per_class(model, split, loader, num_classes, progress) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of |a_j(x)| over the probe set, [classes, neurons], and class counts."""
    sums = torch.zeros(num_classes, split.num_neurons, dtype=torch.float64)
    counts = torch.zeros(num_classes, dtype=torch.long)
    captured: list[torch.Tensor] = []

    def grab(f):
        captured.append(f)
        return f

    with hooks([split.site.register(model, grab)]), torch.no_grad():
        for x, y in tqdm(loader, desc="LO-IR (closed form)", disable=not progress):
            model(x.to(model_device(model)))
            a = captured.pop().abs().flatten(1).double().cpu()  # (B, neurons); 1x1-spatial conv input too
            y = y.cpu()  # the sums live on the CPU, wherever the loader's labels are
            sums.index_add_(0, y, a)
            counts += torch.bincount(y, minlength=num_classes)
    return sums, counts


def _check_probe_batch(batch, i: int, shape: torch.Size | None = None, num_classes: int | None = None) -> None:
    """Raise (one sentence) unless ``batch`` is (images, labels) like the first batch's, labels in range."""
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"probe batch {i} is a {type(batch).__name__}, not (images, labels)")
    x, y = batch
    check_images(x, None, name=f"probe images (batch {i})")
    check_labels(y, len(x), num_classes, name=f"probe labels (batch {i})")
    if shape is not None and x.shape[1:] != shape:
        raise ValueError(f"probe batch {i} has images of shape {tuple(x.shape[1:])}, batch 0 {tuple(shape)}")


def _ablation_sums(model, split, loader, num_classes, neuron_batch, progress) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class sums of |f_y(x) - f_y^(j)(x)| from real forward passes with neuron j zeroed."""
    n = split.num_neurons
    sums = torch.zeros(num_classes, n, dtype=torch.float64)
    counts = torch.zeros(num_classes, dtype=torch.long)
    device = model_device(model)
    with torch.no_grad():
        for x, y in tqdm(loader, desc="LO-IR (ablation)", disable=not progress):
            x, y, b = x.to(device), y.to(device), x.shape[0]
            base = model(x).gather(1, y[:, None]).squeeze(1)  # f_y(x), (B,)
            for start in range(0, n, neuron_batch):
                js = torch.arange(start, min(start + neuron_batch, n), device=device)
                keep = torch.ones(len(js), n, device=device)
                keep[torch.arange(len(js)), js] = 0  # copy i of the batch loses neuron js[i]
                rows = keep.repeat_interleave(b, dim=0)  # (J*B, neurons)
                with hooks([split.site.register(model, lambda f: apply_neuron_mask(f, rows))]):
                    out = model(x.repeat(len(js), *[1] * (x.ndim - 1)))  # (J*B, classes)
                ablated = out.view(len(js), b, -1).gather(2, y.view(1, b, 1).expand(len(js), b, 1)).squeeze(2)
                diff = (ablated - base).abs().double().cpu()  # (J, B)
                sums[:, start:start + len(js)] += torch.zeros(num_classes, len(js), dtype=torch.float64).index_add_(
                    0, y.cpu(), diff.T)
            counts += torch.bincount(y.cpu(), minlength=num_classes)
    return sums, counts


def lo_ir(model: nn.Module, probe_loader: Iterable[tuple[torch.Tensor, torch.Tensor]], layer: str | None = None,
          *, mode: Mode = "auto", class_names: Sequence[str] | None = None, neuron_batch: int = 32,
          probe: str = "", progress: bool = True) -> Rankings:
    """Compute LO-IR rankings of ``model`` on a labelled probe set.

    Args:
        model: the classifier (put in eval mode for the computation, restored after).
        probe_loader: yields (images (B,C,H,W) in the model's input range, labels (B,)).
        layer: None for the penultimate layer; else a module name (its output is ranked).
        mode: "closed" (penultimate only, one pass), "ablation" (batched leave-one-out forward
            passes, any layer) or "auto" (closed when it applies).
        class_names: names of the classes, in label order.
        neuron_batch: neurons ablated per forward pass in ablation mode (memory vs speed).
        probe: description stored in the rankings' metadata.
    Returns:
        :class:`Rankings` with importance [classes, neurons].
    """
    if mode not in ("auto", "closed", "ablation"):
        raise ValueError(f"mode must be 'auto', 'closed' or 'ablation', got {mode!r}")
    modes = module_modes(model)
    model.eval()
    try:
        it = iter(probe_loader)
        first = next(it, None)
        if first is None:
            raise ValueError("the probe loader yielded no batches")
        _check_probe_batch(first, 0)
        split = find_split(model, first[0].to(model_device(model)), layer)
        closed = _closed_form_applies(model, split)
        if mode == "closed" and not closed:
            raise ValueError(f"the closed form needs the input of a final Linear/1x1-conv head; {split.site} "
                             "is not one. Use mode='ablation'.")
        use_closed = closed and mode != "ablation"
        c = split.num_classes

        def batches():
            check_labels(first[1], len(first[0]), c, name="probe labels (batch 0)")  # (now the classes are known)
            yield first
            for i, batch in enumerate(it, start=1):
                _check_probe_batch(batch, i, first[0].shape[1:], c)
                yield batch

        if use_closed:
            sums, counts = _abs_features_per_class(model, split, batches(), c, progress)
            weight = model.get_submodule(split.head).weight.detach().reshape(c, -1).abs().double().cpu()
            sums = sums * weight
        else:
            sums, counts = _ablation_sums(model, split, batches(), c, neuron_batch, progress)
        if (counts == 0).any():
            missing = torch.nonzero(counts == 0).flatten().tolist()
            raise ValueError(f"the probe set has no images of classes {missing}; LO-IR needs every class")
        importance = (sums / counts[:, None]).float()
        return Rankings(importance=importance, method="lo-ir", layer=str(split.site),
                        head_fingerprint=head_fingerprint(model, split.head),
                        input_shape=tuple(first[0].shape[1:]), class_names=list(class_names or []),
                        probe=probe or f"{int(counts.sum())} labelled images")
    finally:
        restore_modes(modes)
