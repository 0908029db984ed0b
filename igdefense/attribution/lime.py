"""LIME for images (Ribeiro et al., KDD 2016), batched over images and samples in torch.

It computes what ``lime.lime_image.LimeImageExplainer.explain_instance`` (lime 0.2.0.1) computes,
given the same superpixels and the same 0/1 sample matrix (see ``../shared/reference/lime.md``):

1. samples: Z (num_samples, n) of 0/1, row 0 all ones (the image itself); a 0 hides superpixel j,
   filled with its mean colour (``hide_color=None``) or a constant;
2. the model's softmax probabilities on every perturbed image (the floor of the cost: these are
   ``num_samples`` forward passes per image, streamed in batches of ``batch_size``);
3. weights w = sqrt(exp(-d^2 / kernel_width^2)), d = the cosine distance of a row to the all-ones
   row, 1 - sqrt(kept / n);
4. per explained label, a weighted ridge regression (alpha = 1, with intercept), in closed form:
   beta = (Zc' W Zc + I)^-1 Zc' W yc with Zc, yc centred by their weighted means. The package
   fits one sklearn model per label per image; here one batched solve does all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._hooks import model_device
from .._validation import check_images, check_number
from .segments import check_segments, hidden_fill


@dataclass
class LimeResult:
    """LIME's local linear models. For image b and its i-th explained label ``labels[b, i]``:
    probability ~= intercept[b, i] + coef[b, i] @ z, z the 0/1 vector of kept superpixels."""

    coef: torch.Tensor  # (B, n_labels, n_segments), float64; 0 past an image's own segment count
    intercept: torch.Tensor  # (B, n_labels), float64
    labels: torch.Tensor  # (B, n_labels), int64: highest predicted first when chosen by top_labels
    n_segments: torch.Tensor  # (B,), int64: each image's segment count


def lime_samples(num_samples: int, n_segments: int, seed: int) -> torch.Tensor:
    """The sample matrix the `lime` package draws with ``LimeImageExplainer(random_state=seed)``
    (and an explicit ``random_seed``, so that no draw goes to the segmentation): (num_samples, n)."""
    z = np.random.RandomState(seed).randint(0, 2, num_samples * n_segments).reshape(num_samples, n_segments)
    z[0] = 1
    return torch.from_numpy(z)


def lime(model: nn.Module, images: torch.Tensor, segments: torch.Tensor, *, num_samples: int = 1000,
         samples: torch.Tensor | None = None, labels: torch.Tensor | None = None, top_labels: int = 5,
         hide_color: float | None = None, kernel_width: float = 0.25, seed: int | None = None,
         batch_size: int = 250, progress: bool = False) -> LimeResult:
    """LIME coefficients of superpixels for a batch of images.

    Args:
        model: classifier returning logits (LIME explains their softmax, as the package's
            ``classifier_fn`` returns probabilities); run in eval mode by the caller.
        images: (B, C, H, W) float in [0, 1].
        segments: (B, H, W) integer superpixel ids 0..n_b-1 per image, no gaps (see :func:`segment`).
        num_samples: perturbed images per image (row 0 is the image itself).
        samples: an explicit 0/1 matrix (num_samples, N) for every image, or (B, num_samples, N)
            per image (N >= the largest segment count; columns past an image's count are
            ignored), e.g. from :func:`lime_samples` to replay the package's draws. None draws
            them from ``seed``.
        labels: the classes to explain, (B, n_labels) or (n_labels,) for all images; None
            explains the ``top_labels`` classes of highest predicted probability.
        hide_color: fill of hidden superpixels; None is each superpixel's mean colour.
        kernel_width: width of the exponential kernel on the cosine distance.
        seed: seed of the sample draws (None: torch's global RNG).
        batch_size: perturbed images per forward pass.
    Returns:
        :class:`LimeResult`.
    """
    check_number("num_samples", num_samples, integer=True, low=1)
    check_number("kernel_width", kernel_width, low=0, low_open=True)
    check_number("batch_size", batch_size, integer=True, low=1)
    check_images(images)
    batch = len(images)
    segments, counts = check_segments(segments, images)
    z = _samples(samples, num_samples, counts, seed)  # (B, S, N), 0/1
    device, origin = model_device(model), images.device  # the result goes back to the images' device
    images, segments, z = images.to(device), segments.to(device), z.to(device)
    fill = hidden_fill(images, segments, hide_color)
    probs = _probabilities(model, images, fill, segments, z, batch_size, progress)  # (B, S, K)
    if labels is None:
        labels = probs[:, 0].argsort(dim=1, descending=True, stable=True)[:, :top_labels]
    else:
        labels = torch.as_tensor(labels, device=device).long()
        labels = labels.expand(batch, -1) if labels.ndim == 1 else labels
        if labels.shape[0] != batch or labels.min() < 0 or labels.max() >= probs.shape[2]:
            raise ValueError(f"labels must be class indices in [0, {probs.shape[2] - 1}], shape (B, n) or (n,)")
    y = probs.gather(2, labels[:, None, :].expand(-1, probs.shape[1], -1))  # (B, S, n_labels)
    coef, intercept = _weighted_ridge(z, y, counts.to(device), kernel_width)
    return LimeResult(coef.to(origin), intercept.to(origin), labels.to(origin), counts)


def _samples(samples, num_samples: int, counts: torch.Tensor, seed: int | None) -> torch.Tensor:
    batch, widest = len(counts), int(counts.max())
    if samples is None:
        gen = torch.Generator("cpu").manual_seed(seed) if seed is not None else None  # same draws on any device
        z = torch.randint(0, 2, (batch, num_samples, widest), generator=gen, dtype=torch.uint8)
        z[:, 0] = 1
        return z
    z = torch.as_tensor(samples)
    z = z.expand(batch, *z.shape) if z.ndim == 2 else z
    if z.ndim != 3 or z.shape[0] != batch or z.shape[2] < widest or not ((z == 0) | (z == 1)).all():
        raise ValueError(f"samples must be a 0/1 matrix (num_samples, N) or (B, num_samples, N) with N >= "
                         f"{widest} (the most segments of an image), got {tuple(z.shape)}")
    return z[:, :, :widest].to(torch.uint8)  # 0/1: a byte each, not 8 (B x S x N can be large)


@torch.no_grad()
def _probabilities(model, images, fill, segments, z, batch_size: int, progress: bool) -> torch.Tensor:
    """Softmax of the model on every perturbed image, (B, S, classes), in batches over (image, sample)."""
    batch, num_samples = z.shape[:2]
    flat_segments = segments.flatten(1)
    out = []
    for start in tqdm(range(0, batch * num_samples, batch_size), desc="LIME", disable=not progress):
        idx = torch.arange(start, min(start + batch_size, batch * num_samples), device=images.device)
        b, s = idx // num_samples, idx % num_samples
        keep = z[b, s].gather(1, flat_segments[b]).view(len(idx), 1, *images.shape[2:]).bool()  # (n, 1, H, W)
        # channels_last: convolutions on CPUs take it 1.3-1.5x faster (SmallCNN, benchmarks/lime_speed.py)
        perturbed = torch.where(keep, images[b], fill[b]).contiguous(memory_format=torch.channels_last)
        out.append(torch.softmax(model(perturbed), dim=1).double())
    return torch.cat(out).view(batch, num_samples, -1)


def _weighted_ridge(z: torch.Tensor, y: torch.Tensor, counts: torch.Tensor, kernel_width: float,
                    chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Ridge (alpha 1, intercept) of y (B, S, L) on z (B, S, N) with LIME's kernel weights, per image
    and label: coef (B, L, N), intercept (B, L). Columns past an image's count get coefficient 0."""
    coefs, intercepts = [], []
    for start in range(0, len(z), chunk):  # bounded memory: (chunk, S, N) float64 at a time
        zb, yb, n = z[start:start + chunk].double(), y[start:start + chunk], counts[start:start + chunk]
        real = torch.arange(zb.shape[2], device=z.device)[None, :] < n[:, None]  # (b, N)
        zb = zb * real[:, None]
        kept = zb.sum(2)  # (b, S)
        distance = 1 - torch.sqrt(kept / n[:, None].double())
        w = torch.sqrt(torch.exp(-distance ** 2 / kernel_width ** 2))  # (b, S)
        wsum = w.sum(1, keepdim=True)
        zbar = (w[..., None] * zb).sum(1) / wsum  # (b, N)
        ybar = (w[..., None] * yb).sum(1) / wsum  # (b, L)
        zc = zb - zbar[:, None]  # padded columns stay 0: zb and zbar are 0 there
        yc = yb - ybar[:, None]
        wz = w[..., None] * zc
        a = wz.transpose(1, 2) @ zc + torch.eye(zc.shape[2], dtype=torch.float64, device=z.device)
        beta = torch.linalg.solve(a, wz.transpose(1, 2) @ yc)  # (b, N, L)
        coefs.append(beta.transpose(1, 2))
        intercepts.append(ybar - (zbar[:, :, None] * beta).sum(1))
    return torch.cat(coefs), torch.cat(intercepts)
