"""LO-IR rankings of a model on a probe of a dataset, computed once and cached, keyed by what they
are computed from: the model's weights, the probe images (source files and indices), the layer."""

from __future__ import annotations

import logging
import re

from torch import nn

from ..atomic import atomic_write
from .._identity import RESULTS_VERSION, file_digest, model_digest, short_digest
from .._seal import seal, sealed
from .format import Rankings
from .lo_ir import lo_ir

log = logging.getLogger(__name__)


def cached_lo_ir(model: nn.Module, data, per_class: int, *, name: str = "model", layer: str | None = None,
                 class_names: list[str] | None = None, batch_size: int = 200) -> Rankings:
    """LO-IR of ``model`` on the first ``per_class`` images of each class of ``data`` (an
    :class:`igdefense.data.LabelledImages`, e.g. a training split), from the cache when these exact
    weights, images and layer were ranked before; else computed and cached (``cache_dir()/rankings``).
    ``name`` only makes the cache file's name readable."""
    from ..data import balanced_loader, cache_dir, probe_used

    loader = balanced_loader(data, batch_size=batch_size, per_class=per_class)
    made_by = short_digest({"method": "lo-ir", "model": model_digest(model), "data": data.identity(),
                            "layer": layer, "results_version": RESULTS_VERSION})
    slug = re.sub(r"[^\w.-]+", "_", name)[-60:]
    path = cache_dir() / "rankings" / f"{slug}-lo-ir-{made_by}.safetensors"
    seal_file = path.with_suffix(".seal")
    if path.exists() and seal_file.exists():  # (a file copied, crafted or edited under this name is recomputed)
        if sealed(path.parent, made_by, file_digest(path), seal_file.read_text().strip()):
            return Rankings.load(path)
        log.warning("%s is not what this cache wrote (its seal differs): ranking again", path)
    description = getattr(data, "description", type(data).__name__)
    rankings = lo_ir(model, loader, layer=layer, class_names=class_names,
                     probe=f"{description}, {probe_used(data, per_class)}")
    rankings.made_by = made_by
    seal_file.unlink(missing_ok=True)
    rankings.save(path)
    atomic_write(seal_file, seal(path.parent, made_by, file_digest(path)))
    return rankings
