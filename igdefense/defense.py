"""The interpretability-guided test-time defense (Kulkarni & Weng, ECCV 2024, arXiv 2409.15190).

Pass 1 classifies a Gaussian-noised copy of the input and turns the logits into a sharp soft
pseudo-label p = softmax(mean_logits / tau). The soft mask m = p @ M keeps each class's top-k
neurons (rows of the 0/1 matrix M from the rankings). Pass 2 classifies the clean input with the
penultimate features multiplied by m. Nothing is detached: gradients reach the input through
both passes, so white-box attacks see the whole defense (``smooth_gradients()`` gives attacks the
gradient of a softer pseudo-label instead).
"""

from __future__ import annotations

import os
from contextlib import contextmanager, nullcontext
from typing import ContextManager, Iterator, Protocol, runtime_checkable

import torch
from torch import nn

from ._hooks import apply_neuron_mask, hooks, model_device, model_dtype
from ._identity import model_identity, tensor_digest
from ._validation import check_images, check_number, in_train_mode
from .precision import autocast, check_precision, compute_dtype, precision_name
from .rankings import Rankings, RankingsError
from .split import Site, find_split, head_fingerprint


SIGMA, TAU = 4 / 255, 0.01  # the paper's pass-1 noise (eps / 2) and pseudo-label temperature
DEFAULT_SHARE = 0.10  # neurons kept per class when k is not given: this share of the masked layer's
# On a CPU one backbone pass over [noisy; clean] beats two passes up to about this many images, where the
# activations still fit the caches (crossover at 8-16 for SmallCNN and ResNet-18, benchmarks/overhead.py).
CPU_SHARED_UP_TO = 16


@runtime_checkable
class RandomizedDefense(Protocol):
    """A model whose forward pass draws noise, as the evaluation sees it: ``reseed`` makes its noise
    depend only on the batch and step (resumed and sharded runs agree; EOT attacks and the sanity
    checks apply; its examples are never cached), ``smooth_gradients`` gives BPDA attacks a
    surrogate gradient (``contextlib.nullcontext()`` when nothing in the forward pass saturates).
    :class:`IGDefense` is one; a third-party randomized defense implements both to be evaluated as one,
    and may name its own adaptive attack as a method ``adaptive_attack(x, y, settings) -> [candidates]``,
    which the attack ``adaptive`` runs (checked, scored and cascaded like every other attack; the evaluation
holds IGDefense's own, the mask-aware attack)."""

    def reseed(self, seed: int | None) -> None: ...

    def smooth_gradients(self, tau: float = 1.0) -> ContextManager: ...


class IGDefense(nn.Module):
    """Wrap a classifier so that it masks unimportant penultimate neurons per predicted class.

    Args:
        model: the classifier (taking images, returning logits (B, classes)).
        rankings: :class:`Rankings` (or a path to a saved one) computed for this model.
        k: neurons kept per class; default 10% of the neurons, rounded (51 of 512, 13 of 128). The
            paper uses k = 50 on CIFAR (of 512 neurons in ResNet-18, 640 in WRN-34-10): pass ``k=50``.
        share: or the neurons kept per class as a share of the masked layer's (k = share x neurons,
            rounded, at least 1): one setting for layers of different widths. Not with ``k``.
        sigma: std of the Gaussian noise of pass 1, in the model's input space (paper: eps/2).
        n_samples: noise draws averaged (in logit space) for the pseudo-label.
        tau: softmax temperature of the pseudo-label.
        seed: seed of the defense's own noise generator (reproducible draws); None uses torch's
            global RNG.
        input_range: checked range of input values, or None to skip the check.
        shared_backbone: run the backbone once on the concatenated [noisy; clean] batch and the
            head twice (True), or make two full passes (False). None (default) shares it on GPUs,
            and on CPUs only while the backbone's batch, (n_samples + 1) x B, is at most
            ``CPU_SHARED_UP_TO`` (16) images: beyond that a CPU pass over 2B images costs more than
            two passes over B (the activations leave the caches: 2.39x vs 2.04x the base time for
            the zoo's SmallCNN at batch 256, benchmarks/overhead.py). Both paths compute the same
            function. Sharing needs the masked layer to be the classifier's input and the
            classifier's output to be the model's output, and batch norm to use running statistics;
            otherwise (``layer=`` a deeper site; batch norm with ``track_running_stats=False``) two passes
            are made anyway.
        precision: ``"fp32"`` (default: as the authors' release), ``"bf16"`` (both passes under
            bfloat16 autocast, the pseudo-label's softmax in float32: with tau = 0.01 a bfloat16
            softmax saturates differently) or ``"auto"`` (:mod:`igdefense.precision`: bfloat16
            where this device computes it faster). Part of the defense's identity.

    The wrapped model must be in eval mode (``wrap`` sets it): a forward with any of its modules in
    train mode raises, since batch norm would mix pass 1's noisy images with the clean ones and
    update its running statistics. Images are cast to the model's dtype (float16 or float64
    images work with a float32 model); the logits come in the model's dtype. An empty batch gives
    empty logits (0, classes).

    Example::

        rankings = igdefense.lo_ir(model, probe_loader)
        defended = igdefense.IGDefense(model, rankings, k=50).eval()
    """

    def __init__(self, model: nn.Module, rankings: Rankings | str | os.PathLike, *, k: int | None = None,
                 share: float | None = None, sigma: float = SIGMA, n_samples: int = 1, tau: float = TAU, seed: int | None = None,
                 input_range: tuple[float, float] | None = (0.0, 1.0), shared_backbone: bool | None = None,
                 precision: str = "fp32"):
        super().__init__()
        if not isinstance(rankings, Rankings):
            rankings = Rankings.load(rankings)
        check_number("n_samples", n_samples, integer=True, low=1)
        # (a std no wider than the inputs' whole range: on [0, 1] images 8/255, not 8)
        check_number("sigma", sigma, low=0, high=None if input_range is None else input_range[1] - input_range[0])
        check_number("tau", tau, low=0, low_open=True)
        if k is not None:
            check_number("k", k, integer=True, low=1)
        if share is not None:
            check_number("share", share, low=0, low_open=True, high=1)
            if k is not None:
                raise ValueError(f"k={k} and share={share} both name the neurons kept per class: give one")
        if seed is not None:
            check_number("seed", seed, integer=True, low=0)
        device = model_device(model)
        example = torch.full((1, *rankings.input_shape), 0.5, device=device, dtype=model_dtype(model))
        site = Site.parse(rankings.layer)
        if site.module not in dict(model.named_modules()):
            raise RankingsError(f"these rankings were made for another model: they mask {site}, and this "
                                f"model has no module {site.module!r}. Recompute them for this model.")
        try:
            split = find_split(model, example, site)
        except RuntimeError as e:  # (a crafted or another model's input_shape: the probe image does not fit)
            raise RankingsError(f"these rankings were made for images of shape {tuple(rankings.input_shape)}, which "
                                f"this model cannot take ({str(e).splitlines()[0]}): recompute them for this "
                                "model") from e
        rankings.check_matches(split, head_fingerprint(model, split.head))
        self.model = model
        self.split = split
        self._parts = tuple(model.modules())  # (checked for train mode on every call: listed once)
        self.k = max(1, round((share or DEFAULT_SHARE) * split.num_neurons)) if k is None else int(k)
        self.register_buffer("class_masks", rankings.mask(self.k).to(device))  # (classes, neurons)
        self.rankings_digest = tensor_digest(rankings.importance)[:32]
        self.sigma, self.n_samples, self.tau = float(sigma), int(n_samples), float(tau)
        self.input_range = input_range
        self.input_shape = tuple(rankings.input_shape)
        self.seed = seed
        self.shared_backbone = shared_backbone
        # Batch norm without running statistics normalises by the batch's own, even in eval mode: a shared
        # [noisy; clean] batch would mix pass 1's images into pass 2's (and change the defense's function).
        self._batch_statistics = any(isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is None
                                     for m in model.modules())
        self.precision = check_precision(precision)
        self._computing_dtype: torch.dtype | None = None  # set by computing_in()
        self._generators: dict[torch.device, torch.Generator] = {}
        self._gradient_tau: float | None = None  # set by smooth_gradients()

    def extra_repr(self) -> str:
        return (f"site={self.split.site}, k={self.k}/{self.split.num_neurons}, sigma={self.sigma:.4g}, "
                f"n_samples={self.n_samples}, tau={self.tau:g}, precision={self.precision}")

    def identity(self) -> dict:
        """What this defense's outputs depend on (logs and caches are bound to it): the base model's
        weights, the rankings, the masked site, every setting but the seed (evaluations reseed) and
        the rule by which the forward pass picks its path on the model's device (its noise stream is
        the device's too) and the precision it computes in (float32, as every log before it: not named)."""
        identity = {"defense": type(self).__qualname__, "model": model_identity(self.model),
                    "rankings": self.rankings_digest, "site": str(self.split.site), "k": self.k, "sigma": self.sigma,
                    "tau": self.tau, "n_samples": self.n_samples, "device": self.class_masks.device.type,
                    "path": self._path_rule(self.class_masks.device)}
        dtype = compute_dtype(self.precision, self.class_masks.device)
        return identity if dtype == torch.float32 else {**identity, "precision": precision_name(dtype)}

    def compute_dtype(self, device: torch.device) -> torch.dtype:
        """The dtype the passes compute in on ``device`` (an attack's, within :meth:`computing_in`)."""
        return self._computing_dtype or compute_dtype(self.precision, device)

    @contextmanager
    def computing_in(self, dtype: torch.dtype) -> Iterator["IGDefense"]:
        """Within this block the defense computes in ``dtype`` whatever its precision: attacks craft
        their examples in it (the evaluation judges them outside it, in the defense's own), an ONNX
        export traces float32."""
        before, self._computing_dtype = self._computing_dtype, dtype
        try:
            yield self
        finally:
            self._computing_dtype = before

    def masked_logits(self, x: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        """Pass 2 alone, with the mask fixed to the important neurons of ``classes`` (B,) (the mask pass 1
        would give if it picked them): differentiable, for attacks on the mechanism."""
        dtype = model_dtype(self.model)
        mask = self.class_masks[classes].to(dtype)
        with hooks([self.split.site.register(self.model, lambda f: apply_neuron_mask(f, mask))]), \
                autocast(self.compute_dtype(x.device), x.device):
            return self.model(x.to(dtype)).to(dtype)

    def unmasked_logits(self, x: torch.Tensor) -> torch.Tensor:
        """The base model's logits, computed in the defense's precision (pass 1 without noise)."""
        dtype = model_dtype(self.model)
        with autocast(self.compute_dtype(x.device), x.device):
            return self.model(x.to(dtype)).to(dtype)

    def reseed(self, seed: int | None) -> None:
        """Restart the defense's noise stream from ``seed`` (None: use torch's global RNG)."""
        self.seed = seed
        self._generators.clear()

    @contextmanager
    def smooth_gradients(self, tau: float = 1.0) -> Iterator["IGDefense"]:
        """Within this block the forward pass is unchanged, but the pseudo-label's gradient is that of
        ``softmax(logits / tau)`` (BPDA, Athalye et al. 2018: a straight-through surrogate). With the
        defense's sharp tau = 0.01 the softmax saturates and its gradient all but vanishes, which
        hides from white-box attacks that flipping pass 1's label flips the mask; ``apgd-ce-bpda``
        attacks through this block."""
        self._gradient_tau = float(tau)
        try:
            yield self
        finally:
            self._gradient_tau = None

    def draw_noise(self, x: torch.Tensor) -> torch.Tensor:
        """Pass-1 noise for batch ``x``: shape (n_samples, *x.shape)."""
        shape = (self.n_samples, *x.shape)
        gen = None
        if self.seed is not None:
            if x.device not in self._generators:
                self._generators[x.device] = torch.Generator(x.device).manual_seed(self.seed)
            gen = self._generators[x.device]
        return torch.randn(shape, generator=gen, device=x.device, dtype=x.dtype) * self.sigma

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Defended logits (B, classes) of images ``x`` (B, C, H, W).

        ``noise``: explicit pass-1 noise, shape (n_samples, *x.shape) or x.shape when
        n_samples == 1 (already scaled: it is added as is). None draws N(0, sigma^2).
        """
        x, noise = self._checked(x, noise)
        if not len(x):  # some models fail on empty batches (a reshape with -1); the answer is known
            return x.new_zeros(0, self.split.num_classes)
        try:
            return self.defend(x, noise)
        except RuntimeError as e:
            if tuple(x.shape[2:]) == self.input_shape[1:]:
                raise
            # Models with global pooling take other sizes; say what was expected when this one does not.
            raise ValueError(f"the model fails on {tuple(x.shape[2:])} images; the rankings were computed on "
                             f"images of shape {self.input_shape}: resize the images to that size. "
                             f"The model's error: {e}") from e

    def mask(self, x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Pass 1 alone: the soft neuron mask (B, neurons) that ``forward`` applies at the split for
        images ``x`` (``noise`` as in ``forward``). Differentiable, like ``forward``."""
        x, noise = self._checked(x, noise)
        noisy = (x.unsqueeze(0) + noise).flatten(0, 1)
        with autocast(self.compute_dtype(x.device), x.device):
            return self._soft_mask(self.model(noisy), x.shape[0])

    def _checked(self, x: torch.Tensor, noise: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        self._check_device(x)
        check_images(x, self.input_range)
        self._check_runnable(x)
        x = x.to(model_dtype(self.model))  # differentiable: attacks on float64 images still get gradients
        if noise is None:
            noise = self.draw_noise(x)
        elif noise.shape == x.shape and self.n_samples == 1:
            noise = noise.unsqueeze(0)
        elif noise.shape != (self.n_samples, *x.shape):
            raise ValueError(f"noise must have shape {(self.n_samples, *x.shape)}, got {tuple(noise.shape)}")
        return x, noise.to(x)

    def _check_device(self, x: torch.Tensor) -> None:
        """A module refuses images on another device (the jobs, evaluate, lo_ir, attribute, ..., move data
        to the model's device instead)."""
        device = model_device(self.model)
        if isinstance(x, torch.Tensor) and x.device != device:
            raise ValueError(f"images are on {x.device} but the model is on {device}: pass images.to({str(device)!r})")
        if self.class_masks.device != device:
            raise ValueError(f"the model is on {device} but the defense's class masks are on {self.class_masks.device}: "
                             f"move the defended model (defended.to({str(device)!r})), not its model alone")

    def _check_runnable(self, x: torch.Tensor) -> None:
        if any(m.training for m in self._parts) and (which := in_train_mode(self.model)) is not None:
            raise RuntimeError(f"IGDefense runs the model in eval mode only, but {which} is in train mode "
                               "(batch norm would mix pass 1's noisy images with the clean ones and update its "
                               "statistics): call defended.eval() (igdefense.wrap does it for you)")
        channels = self.input_shape[0]
        if x.shape[1] != channels:
            hint = " (repeat grayscale images: x.expand(-1, 3, -1, -1))" if x.shape[1] == 1 and channels == 3 else ""
            raise ValueError(f"images have {x.shape[1]} channels, but this model takes images of shape "
                             f"(batch, {', '.join(map(str, self.input_shape))}) (stored in its rankings); got "
                             f"{tuple(x.shape)}{hint}")

    def defend(self, x: torch.Tensor, noise: torch.Tensor, shared_backbone: bool | None = None) -> torch.Tensor:
        """The defense proper, without input checks: ``noise`` has shape (n_samples, *x.shape);
        ``shared_backbone`` None takes the path this defense picks for the device and batch."""
        noisy = (x.unsqueeze(0) + noise).flatten(0, 1)  # (n*B, C, H, W); not clamped, as in the paper
        if shared_backbone is None:
            shared_backbone = self._shares(x.device, x.shape[0])
        with autocast(self.compute_dtype(x.device), x.device):
            if shared_backbone and self.split.fast:
                return self._forward_shared_backbone(noisy, x).to(x.dtype)
            return self._forward_two_passes(noisy, x).to(x.dtype)

    def _shares(self, device: torch.device, batch: int | None = None) -> bool:
        """Whether the forward pass of ``batch`` images (None: a large batch) on ``device`` runs the
        backbone once on [noisy; clean] (see __init__)."""
        if not self.split.fast or self._batch_statistics:
            return False
        if self.shared_backbone is not None:
            return self.shared_backbone
        return device.type != "cpu" or (batch is not None and (self.n_samples + 1) * batch <= CPU_SHARED_UP_TO)

    def _path_rule(self, device: torch.device) -> str:
        if self._shares(device) or not self._shares(device, 1):  # one path at every batch
            return "shared backbone" if self._shares(device) else "two passes"
        return f"shared backbone up to {CPU_SHARED_UP_TO} backbone images, else two passes"

    def _soft_mask(self, noisy_logits: torch.Tensor, batch: int) -> torch.Tensor:
        # The pseudo-label in float32 (or the model's wider dtype) even under bfloat16 autocast: with
        # tau = 0.01 a bfloat16 softmax rounds the logits' gaps and saturates differently.
        under_autocast = torch.is_autocast_enabled(noisy_logits.device.type)
        with torch.autocast(noisy_logits.device.type, enabled=False) if under_autocast else nullcontext():
            noisy_logits = noisy_logits.to(torch.promote_types(noisy_logits.dtype, torch.float32))
            mean_logits = noisy_logits if self.n_samples == 1 else \
                noisy_logits.reshape(self.n_samples, batch, noisy_logits.shape[-1]).mean(0)  # (B, classes)
            p = torch.softmax(mean_logits / self.tau, dim=1)
            if self._gradient_tau is not None:  # forward value p, gradient of the smoother surrogate
                surrogate = torch.softmax(mean_logits / self._gradient_tau, dim=1)
                p = surrogate + (p - surrogate).detach()
            return (p @ self.class_masks.to(p.dtype)).to(self.class_masks.dtype)  # (B, neurons), the model's dtype

    def _forward_shared_backbone(self, noisy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        head = self.model.get_submodule(self.split.head)
        n_noisy = noisy.shape[0]
        inside = False

        def mask_head_input(module, args):
            # Runs at the head with features of [noisy; clean]: pass 1 on the noisy rows here,
            # then the head continues on the masked clean rows only.
            nonlocal inside
            if inside:
                return None
            inside = True
            try:
                noisy_logits = module(args[0][:n_noisy])
            finally:
                inside = False
            mask = self._soft_mask(noisy_logits, x.shape[0])
            return (apply_neuron_mask(args[0][n_noisy:], mask), *args[1:])

        with hooks([head.register_forward_pre_hook(mask_head_input)]):
            return self.model(torch.cat([noisy, x]))

    def _forward_two_passes(self, noisy: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        mask = self._soft_mask(self.model(noisy), x.shape[0])
        with hooks([self.split.site.register(self.model, lambda f: apply_neuron_mask(f, mask))]):
            return self.model(x)
