"""Saliency maps of a batch, one signature for Grad-CAM, SmoothGrad and LIME, for any classifier and
for an IGDefense (the map of the defended model's decision).

- Grad-CAM (Selvaraju et al. 2017): the ``grad-cam`` package, at the last layer with a spatial
  (B, C, H, W) output before the classifier (``layer=`` overrides); in [0, 1], input resolution.
- SmoothGrad (Smilkov et al. 2017): captum's NoiseTunnel over input gradients, |gradient| summed
  over channels.
- LIME (Ribeiro et al. 2016): igdefense's batched LIME on SLIC superpixels of each image, the
  superpixel's weight painted on its pixels.

An IGDefense's decision for an image is the base model with a mask fixed by pass 1 (its noisy
copy). Gradient maps use exactly that: pass 1 once, then the masked base model (the mask's own
gradient is that of a softmax at tau = 0.01, zero to float precision). LIME queries the whole
defense, noise included, as the black box it is.
"""

from __future__ import annotations

from collections import Counter
from contextlib import contextmanager
from typing import Iterator, Literal

import torch
from torch import nn

from .._hooks import apply_neuron_mask, eval_mode, hooks, model_device
from .._validation import check_images, check_labels, check_number
from ..attribution import attribute, segment
from ..attribution.registry import attribution_method, register_attribution

SMOOTHGRAD_PIXELS = 2**23
Method = Literal["gradcam", "smoothgrad", "lime", "kernel_shap", "saliency", "integrated_gradients"]


class _MaskedDecision(nn.Module):
    """The defended model's decision with pass 1's mask held fixed: the base model, masked at the split."""

    def __init__(self, defense: nn.Module, x: torch.Tensor, noise: torch.Tensor):
        super().__init__()
        self.base, self.site = defense.model, defense.split.site
        with torch.no_grad():
            self.mask = defense.mask(x, noise)  # (B, neurons): the pass 1 of the decision explained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = self.mask.repeat_interleave(len(x) // len(self.mask), 0)  # captum: each image's copies together
        with hooks([self.site.register(self.base, lambda f: apply_neuron_mask(f, mask))]):
            return self.base(x)


def cam_layer(model: nn.Module, example: torch.Tensor) -> str:
    """Name of the module that finishes last among those whose output is (B, C, H, W) with H, W > 1
    (a ResNet's ``layer4``: the last block's output, after its residual add and ReLU).

    A module run more than once per forward is skipped: Grad-CAM's hooks would take its first call
    (ResNet blocks apply one ``relu`` twice; EfficientNet-PyTorch one ``_swish`` after the stem, 112 x 112,
    and after the head)."""
    names = {m: n for n, m in model.named_modules()}
    calls: Counter[str] = Counter()
    spatial: list[str] = []

    def record(m, args, out):
        calls[names[m]] += 1
        if isinstance(out, torch.Tensor) and out.ndim == 4 and min(out.shape[2:]) > 1:
            spatial.append(names[m])

    with hooks([]) as hs, eval_mode(model), torch.no_grad():
        hs += [m.register_forward_hook(record) for m in model.modules() if m is not model]
        model(example[:1])
    spatial = [n for n in spatial if calls[n] == 1]
    if not spatial:
        raise ValueError("Grad-CAM needs a layer with a spatial (B, C, H, W) output, run once per forward, and "
                         "this model has none (a transformer or an MLP?); pass layer='<module name>' (for ViTs, a "
                         "block's output with a reshape) or use method='smoothgrad' or 'lime'")
    return spatial[-1]


def explain(model: nn.Module, images: torch.Tensor, target: torch.Tensor | None = None, *, method: Method = "gradcam",
            layer: str | None = None, nt_samples: int = 20, stdev: float = 0.15, num_samples: int = 1000,
            segments: torch.Tensor | None = None, seed: int = 0) -> torch.Tensor:
    """Saliency maps (B, H, W), float32 on the images' device; larger = more important for ``target``.

    Args:
        model: a classifier, or an ``IGDefense`` (the map of its decision; see the module docstring).
        images: (B, 3, H, W) in [0, 1].
        target: (B,) classes to explain; None: the model's prediction.
        method: "gradcam", "smoothgrad", "lime", or any other method of the attribution registry
            (:mod:`igdefense.attribution.registry`; one giving superpixel scores is painted on its pixels).
        layer: Grad-CAM's layer (a module name of the classifier; of the base model for an
            IGDefense); None: :func:`cam_layer`.
        nt_samples: SmoothGrad's noisy copies.
        stdev: their std (a fraction of the [0, 1] range).
        num_samples: LIME's perturbations per image.
        segments: LIME's superpixels (None: SLIC).
        seed: SmoothGrad's and LIME's random draws, the defense's pass-1 noise.
    """
    from ..defense import IGDefense

    check_images(images)
    if not len(images):
        raise ValueError("images holds no images")
    attribution_method(method, "pixels")  # (unknown: one line naming the choices)
    check_number("nt_samples", nt_samples, integer=True, low=1)
    check_number("stdev", stdev, low=0)
    check_number("num_samples", num_samples, integer=True, low=1)
    device = model_device(model)
    x = images.detach().to(device)
    defended = isinstance(model, IGDefense)
    with _seeded(model, seed, device):
        return _maps(model, x, target, method, defended, layer, nt_samples, stdev, num_samples, segments,
                     seed).to(images.device)


def explained_class(model: nn.Module, images: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The class :func:`explain` explains when given no target: the model's prediction (an IGDefense's
    under its first noise draw from ``seed``, the draw its map's mask comes from)."""
    from ..defense import IGDefense

    x = images.detach().to(model_device(model))
    with _seeded(model, seed, x.device), torch.no_grad():
        return (model(x, model.draw_noise(x)) if isinstance(model, IGDefense) else model(x)).argmax(1)


@contextmanager
def _seeded(model: nn.Module, seed: int, device: torch.device) -> Iterator[None]:
    """Torch's and an IGDefense's noise from ``seed``, the model in eval mode; all as they were after."""
    from ..defense import IGDefense

    defended = isinstance(model, IGDefense)
    own_seed = model.seed if defended else None
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            if defended:
                model.reseed(seed)
            with eval_mode(model):  # (the maps of the deployed model; grad-cam's eval() is undone after)
                yield
    finally:
        if defended:
            model.reseed(own_seed)  # the caller's seed back (its noise stream restarts from it)


def _maps(model, x, target, method, defended, layer, nt_samples, stdev, num_samples, segments, seed) -> torch.Tensor:
    noise = model.draw_noise(x) if defended else None  # (one pass 1: the decision explained and its mask)
    with torch.no_grad():
        logits = model(x, noise) if defended else model(x)
    if target is None:
        target = logits.argmax(1)
    check_labels(target, len(x), logits.shape[1], name="target")
    target = target.to(x.device)
    registered = attribution_method(method, "pixels")
    if registered.pixels is None:  # scores per superpixel, of the whole model (a defense: noise included)
        return _painted(model, x, target, method, segments, num_samples, seed)
    decision = _MaskedDecision(model, x, noise) if defended else model
    return registered.pixels(decision, model.model if defended else model, x, target, layer=layer,
                             nt_samples=nt_samples, stdev=stdev)


def _gradcam(decision: nn.Module, base: nn.Module, x: torch.Tensor, target: torch.Tensor, *, layer: str | None,
             **_) -> torch.Tensor:
    try:
        from pytorch_grad_cam import GradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    except ImportError as e:
        raise ImportError("Grad-CAM needs the grad-cam package: pip install 'igdefense[explain]'") from e
    modules = dict(base.named_modules())
    if layer is None:
        layer = cam_layer(base, x)  # (a spatial layer by construction)
    else:
        _check_cam_layer(base, modules, layer, x)
    with GradCAM(model=decision, target_layers=[modules[layer]]) as cam:
        maps = cam(input_tensor=x, targets=[ClassifierOutputTarget(int(t)) for t in target])
    return torch.from_numpy(maps).float()


def _check_cam_layer(base: nn.Module, modules: dict[str, nn.Module], layer: str, x: torch.Tensor) -> None:
    if layer not in modules:
        raise ValueError(f"layer={layer!r} is not a module of the model; names look like {list(modules)[1:8]}")
    shapes = []  # (its output's shape, from one image: grad-cam's own error would be "Invalid grads shape")
    with hooks([modules[layer].register_forward_hook(
            lambda m, args, out: shapes.append(tuple(out.shape) if torch.is_tensor(out) else type(out).__name__))]), \
            eval_mode(base), torch.no_grad():
        base(x[:1])
    if not shapes or not isinstance(shapes[0], tuple) or len(shapes[0]) != 4:
        raise ValueError(f"layer={layer!r} outputs {shapes[0] if shapes else 'nothing'}, not (B, C, H, W): Grad-CAM "
                         f"needs a spatial layer (layer=None picks one)")


def _smoothgrad(decision: nn.Module, base: nn.Module, x: torch.Tensor, target: torch.Tensor, *, nt_samples: int,
                stdev: float, **_) -> torch.Tensor:
    from captum.attr import NoiseTunnel, Saliency

    # Noisy copies in chunks of about SMOOTHGRAD_PIXELS pixels: 20 copies of 50 ImageNet images at once
    # would hold a 21 GB graph.
    chunk = max(1, min(nt_samples, SMOOTHGRAD_PIXELS // x[0, 0].numel() // len(x)))
    with eval_mode(decision):
        grads = NoiseTunnel(Saliency(decision)).attribute(x, nt_type="smoothgrad", nt_samples=nt_samples,
                                                          nt_samples_batch_size=chunk, stdevs=stdev,
                                                          target=target, abs=True)
    return grads.sum(1).detach().float().cpu()


def _painted(model: nn.Module, images: torch.Tensor, target: torch.Tensor, method: str,
             segments: torch.Tensor | None, num_samples: int, seed: int) -> torch.Tensor:
    """Each superpixel's score (``method``'s) painted on its pixels."""
    if segments is None:
        segments = segment(images.cpu())
    scores = attribute(model, images, segments, target, method=method, num_samples=num_samples, seed=seed)  # (B, N)
    segments = segments.to(scores.device)
    return scores.gather(1, segments.flatten(1)).view(segments.shape).float().cpu()


register_attribution("gradcam", pixels=_gradcam)
register_attribution("smoothgrad", pixels=_smoothgrad)
MAP_METHODS = ("gradcam", "smoothgrad", "lime")  # the explanation study's (attribution_methods(): every map)
