"""Per-superpixel attributions by name, one signature, so callers (refinement) can swap LIME out.

Every method explains the softmax probability of one class per image and returns one score per
superpixel; "hidden" means the same everywhere (the superpixel's mean colour, as LIME's default):

- ``lime``: LIME's coefficient (:func:`igdefense.attribution.lime`).
- ``kernel_shap``: KernelSHAP's Shapley estimate (captum), hidden superpixels as baseline.
- ``saliency``: sum over the superpixel of |d p / d x| (captum ``Saliency``): the first-order change
  of p when the superpixel alone moves by 1 per pixel, in the worst direction.
- ``integrated_gradients``: integrated gradients (captum) from the image with every superpixel
  hidden, summed over the superpixel (so scores add up to p(image) - p(all hidden)).
"""

from __future__ import annotations

import warnings
from typing import Callable, Literal

import torch
from torch import nn

from .._hooks import model_device
from .._validation import check_images, check_labels, check_number
from .lime import lime
from .registry import attribution_method, attribution_methods, register_attribution
from .segments import check_segments, hidden_fill, superpixel_sum

Method = Literal["lime", "kernel_shap", "saliency", "integrated_gradients"]


def attribute(model: nn.Module, images: torch.Tensor, segments: torch.Tensor, target: torch.Tensor | None = None,
              *, method: Method = "lime", num_samples: int = 1000, n_steps: int = 32,
              hide_color: float | None = None, seed: int = 0, batch_size: int = 250) -> torch.Tensor:
    """Scores (B, N) float64 of each superpixel for the probability of ``target``.

    Args:
        model: eval-mode classifier returning logits.
        images: (B, C, H, W) in [0, 1].
        segments: (B, H, W) superpixel ids 0..n_b-1 (:func:`igdefense.attribution.segment`).
        target: (B,) class per image; None explains the predicted class.
        method: a registered method giving superpixel scores (:data:`METHODS`, and those registered
            since: :func:`igdefense.attribution.registry.register_attribution`).
        num_samples: perturbed images per image for ``lime`` and ``kernel_shap``.
        n_steps: path points of ``integrated_gradients``.
        hide_color: what a hidden superpixel shows; None is its mean colour.
        seed: seed of the perturbation draws (the result is a function of the inputs and the seed).
        batch_size: images per forward pass.
    Returns:
        (B, N), N the largest segment count; 0 past an image's own count.
    """
    scores = attribution_method(method, "superpixels").superpixels
    for name, value in (("num_samples", num_samples), ("n_steps", n_steps), ("batch_size", batch_size)):
        check_number(name, value, integer=True, low=1)
    check_images(images)
    device, origin = model_device(model), images.device  # the scores go back to the images' device
    images = images.to(device)
    segments, counts = check_segments(segments, images)
    with torch.no_grad():
        logits = model(images)
    target = logits.argmax(1) if target is None else target
    check_labels(target, len(images), logits.shape[1], name="target")
    n = int(counts.max()) if len(counts) else 0
    return scores(model, images, segments, target.to(device), n=n, num_samples=num_samples, n_steps=n_steps,
                  hide_color=hide_color, seed=seed, batch_size=batch_size).to(origin)


def _probability(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda x: torch.softmax(model(x), dim=1)


def _captum():
    try:
        import captum.attr
    except ImportError as e:
        raise ImportError("this attribution method needs captum: pip install 'igdefense[lime]'") from e
    return captum.attr


def _lime_scores(model, images, segments, target, *, num_samples, hide_color, seed, batch_size, **_):
    return lime(model, images, segments, num_samples=num_samples, labels=target[:, None], hide_color=hide_color,
                seed=seed, batch_size=batch_size).coef[:, 0]


def _saliency_scores(model, images, segments, target, *, n, **_):
    pixels = _captum().Saliency(_probability(model)).attribute(images.clone().requires_grad_(True), target=target,
                                                               abs=True)
    return superpixel_sum(pixels.double(), segments, n)


def _integrated_gradients_scores(model, images, segments, target, *, n, n_steps, hide_color, batch_size, **_):
    pixels = _captum().IntegratedGradients(_probability(model)).attribute(
        images, baselines=hidden_fill(images, segments, hide_color), target=target, n_steps=n_steps,
        internal_batch_size=batch_size)
    return superpixel_sum(pixels.double(), segments, n)


def _kernel_shap_scores(model, images, segments, target, *, n, num_samples, hide_color, seed, batch_size, **_):
    kernel_shap, device = _captum().KernelShap, images.device
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), warnings.catch_warnings():
        torch.manual_seed(seed)  # captum draws KernelSHAP's coalitions from the global RNG
        warnings.filterwarnings("ignore", message="You are providing multiple inputs")  # per-image fits: intended
        pixels = kernel_shap(_probability(model)).attribute(
            images, baselines=hidden_fill(images, segments, hide_color), target=target,
            feature_mask=segments[:, None], n_samples=num_samples, perturbations_per_eval=batch_size)
    # KernelSHAP gives every pixel of a superpixel its superpixel's value: average it back out
    sizes = superpixel_sum(torch.ones_like(segments, dtype=torch.float64), segments, n)
    return superpixel_sum(pixels[:, 0].double(), segments, n) / sizes.clamp(min=1)


register_attribution("lime", superpixels=_lime_scores)
register_attribution("kernel_shap", superpixels=_kernel_shap_scores)
register_attribution("saliency", superpixels=_saliency_scores)
register_attribution("integrated_gradients", superpixels=_integrated_gradients_scores)
METHODS: tuple[str, ...] = attribution_methods("superpixels")  # the ones igdefense ships
