"""Attribution methods by name, one registry for refinement and explanation alike (as timm's
``register_model``). A method gives per-superpixel scores (``superpixels``: what refinement flags
with; :func:`igdefense.attribution.attribute` runs it), a per-pixel map (``pixels``: what
:func:`igdefense.explain.explain` shows), or both; a method with scores alone is shown as a map by
painting each superpixel's score on its pixels.

    superpixels(model, images, segments, target, *, num_samples, n_steps, hide_color, seed, batch_size) -> (B, N)
    pixels(decision, base, images, target, **options) -> (B, H, W)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


@dataclass(frozen=True)
class AttributionMethod:
    """A registered attribution method: its name and how it scores superpixels and/or pixels."""

    name: str
    superpixels: Callable | None = None
    pixels: Callable | None = None


_METHODS: dict[str, AttributionMethod] = {}


def register_attribution(name: str, *, superpixels: Callable | None = None, pixels: Callable | None = None) -> None:
    """Register a method under ``name``; a name registered again gains the kind of result it lacked
    (LIME's scores here, its map painted from them) but never replaces one."""
    if superpixels is None and pixels is None:
        raise ValueError(f"{name}: give superpixels=, pixels= or both")
    old = _METHODS.get(name, AttributionMethod(name))
    if (superpixels and old.superpixels) or (pixels and old.pixels):
        raise ValueError(f"an attribution method named {name!r} is registered already")
    _METHODS[name] = AttributionMethod(name, superpixels or old.superpixels, pixels or old.pixels)


def attribution_method(name: str, kind: str) -> AttributionMethod:
    """The method ``name`` that gives ``kind`` ("superpixels" or "pixels": a map, painted from scores
    where it has none); one line naming the choices otherwise."""
    method = _METHODS.get(name)
    if method is None:
        raise ValueError(f"unknown attribution method {name!r}; choose from {attribution_methods(kind)}")
    if kind == "superpixels" and method.superpixels is None:
        raise ValueError(f"{name!r} gives a pixel map (igdefense.explain), not superpixel scores; choose from "
                         f"{attribution_methods(kind)}")
    return method


def attribution_methods(kind: str = "pixels") -> tuple[str, ...]:
    """Names of the methods giving ``kind``: "superpixels" (scores), or "pixels" (maps: every method)."""
    return tuple(n for n, m in _METHODS.items() if kind == "pixels" or m.superpixels is not None)
