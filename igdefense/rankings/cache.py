"""LO-IR rankings of a model on a probe of a dataset, computed once and cached, keyed by what they
are computed from: the model's weights, the probe images (source files and indices), the layer."""

from __future__ import annotations

import re

from torch import nn

from .._identity import RESULTS_VERSION, model_digest, short_digest
from .format import Rankings
from .lo_ir import lo_ir


def cached_lo_ir(model: nn.Module, data, per_class: int, *, name: str = "model", layer: str | None = None,
                 class_names: list[str] | None = None, batch_size: int = 200) -> Rankings:
    """LO-IR of ``model`` on the first ``per_class`` images of each class of ``data`` (an
    :class:`igdefense.data.LabelledImages`, e.g. a training split), from the cache when these exact
    weights, images and layer were ranked before; else computed and cached (``cache_dir()/rankings``).
    ``name`` only makes the cache file's name readable."""
    from ..data import balanced_loader, cache_dir

    loader = balanced_loader(data, batch_size=batch_size, per_class=per_class)
    made_by = short_digest({"method": "lo-ir", "model": model_digest(model), "data": data.identity(),
                            "layer": layer, "results_version": RESULTS_VERSION})
    slug = re.sub(r"[^\w.-]+", "_", name)[-60:]
    path = cache_dir() / "rankings" / f"{slug}-lo-ir-{made_by}.safetensors"
    if path.exists():
        cached = Rankings.load(path)
        if cached.made_by == made_by:  # (a file copied or crafted under this name is recomputed)
            return cached
    description = getattr(data, "description", type(data).__name__)
    rankings = lo_ir(model, loader, layer=layer, class_names=class_names,
                     probe=f"{description}, first {per_class} per class")
    rankings.made_by = made_by
    rankings.save(path)
    return rankings
