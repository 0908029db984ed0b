"""CD-IR: CLIP-Dissect importance ranking (Kulkarni & Weng, ECCV 2024; CLIP-Dissect, Oikarinen &
Weng, ICLR 2023).

A neuron matters for class c when its most-activating probe images look like c to CLIP. With
S = softmax(a * cos(CLIP image, CLIP class text)) over classes, and neuron j's top-K probe images
i_0..i_{K-1} weighted p_t = 0.998 - (t / K) * (0.998 - 0.97):

    log p(c|j) = sum_t log(1 - p_t + p_t * S[i_t, c] + 1e-7)
    log p(c)   = logsumexp_j log p(c|j) - log N
    score[j,c] = log p(c|j) - lambda * log p(c)          (soft-WPMI)

Needs no labels. Streams over the probe set: keeps the (probe x class) matrix S and, per neuron,
the running top-K activations; never all activations or all images.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .._hooks import hooks, model_device, module_modes, neuron_axis, restore_modes
from .._validation import check_images
from ..split import find_split, head_fingerprint
from .format import Rankings


@dataclass
class SoftWPMI:
    """soft-WPMI settings (CLIP-Dissect / the paper's defaults)."""

    top_k: int = 100  # most-activating probe images per neuron
    a: float = 10.0  # sharpness of the softmax over classes
    lam: float = 1.0  # weight of the class prior term
    p_start: float = 0.998  # weight of the top image...
    p_end: float = 0.97  # ...falling linearly to this over the top_k
    eps: float = 1e-7


def soft_wpmi(similarity: torch.Tensor, top_indices: torch.Tensor, cfg: SoftWPMI = SoftWPMI(),
              neuron_chunk: int = 256) -> torch.Tensor:
    """Scores [neurons, classes] from CLIP similarities [probe, classes] and each neuron's top probe
    indices [neurons, K] (most activating first). Vectorised over neurons (chunked) and classes."""
    s = torch.softmax(cfg.a * similarity.double(), dim=1)  # (probe, classes)
    k = top_indices.shape[1]
    p = cfg.p_start - torch.arange(k, dtype=torch.float64, device=s.device) / k * (cfg.p_start - cfg.p_end)  # (K,)
    p = p.view(1, k, 1)
    log_pcj = torch.cat([torch.log(1 - p + p * s[idx] + cfg.eps).sum(1)  # (chunk, classes)
                         for idx in top_indices.split(neuron_chunk)])
    log_pc = torch.logsumexp(log_pcj, dim=0) - math.log(log_pcj.shape[0])  # (classes,)
    return (log_pcj - cfg.lam * log_pc).float()


def load_clip(name: str = "ViT-B-16", pretrained: str | os.PathLike | None = "openai", device="cpu"):
    """An open_clip model and tokenizer. ``pretrained``: a tag (downloads), a local checkpoint path,
    or None (random weights, for tests)."""
    try:
        import open_clip
    except ImportError as e:
        raise ImportError("CD-IR needs open_clip: pip install 'igdefense[clip]'") from e
    try:
        model, _, _ = open_clip.create_model_and_transforms(name, pretrained=str(pretrained) if pretrained else None,
                                                            device=device)
    except (OSError, RuntimeError) as e:
        raise RuntimeError(f"could not load CLIP {name!r} weights {pretrained!r}: {e}\nWithout internet, download "
                           "the checkpoint elsewhere and pass its local path: pretrained='/path/to/model.bin'") from e
    return model.eval(), open_clip.get_tokenizer(name)


def _clip_inputs(clip_model, x: torch.Tensor) -> torch.Tensor:
    """CLIP preprocessing of [0,1] tensors: bicubic resize of the short side, center crop, CLIP mean/std."""
    cfg = clip_model.visual.preprocess_cfg
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][0]
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    x = F.interpolate(x, size=(max(size, round(h * scale)), max(size, round(w * scale))), mode="bicubic",
                      align_corners=False, antialias=True).clamp(0, 1)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(cfg["mean"], device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(cfg["std"], device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _images(probe) -> Iterable[torch.Tensor]:
    if isinstance(probe, torch.Tensor):
        yield from probe.split(64)
        return
    for batch in probe:
        yield batch[0] if isinstance(batch, (tuple, list)) else batch


def cd_ir(model: nn.Module, probe_images: torch.Tensor | Iterable, class_names: Sequence[str], *,
          clip: str | tuple[nn.Module, Callable] = "ViT-B-16", pretrained: str | os.PathLike | None = "openai",
          layer: str | None = None, templates: Sequence[str] = ("{}",), settings: SoftWPMI = SoftWPMI(),
          probe: str = "", progress: bool = True) -> Rankings:
    """CD-IR rankings of ``model`` (same file format as :func:`igdefense.lo_ir`).

    Args:
        model: the classifier; it sees the probe images as given (its own input format, [0,1]).
        probe_images: a [N,3,H,W] tensor in [0,1] or a DataLoader of images (or (images, labels)).
        class_names: one name per class, in the model's output order.
        clip: an open_clip architecture name, or a loaded ``(model, tokenizer)`` pair (see :func:`load_clip`).
        pretrained: tag (downloads), local checkpoint path, or None (random init, for tests).
        layer: None for the penultimate layer; else a module name (its output, pooled over H, W).
        templates: prompt templates averaged per class ("{}" is the bare class name, the paper's).
        settings: soft-WPMI hyperparameters.
    """
    device = model_device(model)
    clip_model, tokenizer = load_clip(clip, pretrained, device) if isinstance(clip, str) else clip
    modes = module_modes(model)
    model.eval()
    try:
        with torch.no_grad():
            texts = [t.format(c) for c in class_names for t in templates]
            clip_device = model_device(clip_model)  # a CLIP pair passed in may live elsewhere than the model
            txt = F.normalize(clip_model.encode_text(tokenizer(texts).to(clip_device)).float(), dim=-1).to(device)
            txt = F.normalize(txt.view(len(class_names), len(templates), -1).mean(1), dim=-1)  # (classes, D)
            sims, top_vals, top_idx, split, seen, input_shape = [], None, None, None, 0, None
            captured: list[torch.Tensor] = []
            for x in tqdm(_images(probe_images), desc="CD-IR", disable=not progress):
                check_images(x, (0.0, 1.0), name="probe images")
                x = x.to(device)
                if split is None:
                    split = find_split(model, x, layer)
                    input_shape = tuple(x.shape[1:])
                    if split.num_classes != len(class_names):
                        raise ValueError(f"{len(class_names)} class names for a model with {split.num_classes} classes")
                with hooks([split.site.register(model, lambda f: captured.append(f) or f)]):
                    model(x)
                q = _pool(captured.pop())  # (B, neurons)
                img = F.normalize(clip_model.encode_image(_clip_inputs(clip_model, x.to(clip_device))).float(),
                                  dim=-1).to(device)
                sims.append((img @ txt.T).cpu())  # (B, classes)
                idx = torch.arange(seen, seen + len(x)).expand(q.shape[1], -1)  # (neurons, B)
                vals = q.T.cpu()
                if top_vals is not None:
                    vals, idx = torch.cat([top_vals, vals], 1), torch.cat([top_idx, idx], 1)
                k = min(settings.top_k, vals.shape[1])
                top_vals, pos = vals.topk(k, dim=1)  # sorted, most activating first
                top_idx = idx.gather(1, pos)
                seen += len(x)
        if split is None:
            raise ValueError("the probe set is empty")
        scores = soft_wpmi(torch.cat(sims), top_idx, settings)  # (neurons, classes)
        return Rankings(importance=scores.T.contiguous(), method="cd-ir", layer=str(split.site),
                        head_fingerprint=head_fingerprint(model, split.head), input_shape=input_shape,
                        class_names=list(class_names),
                        probe=probe or f"{seen} unlabelled images, top {settings.top_k} per neuron")
    finally:
        restore_modes(modes)


def _pool(f: torch.Tensor) -> torch.Tensor:
    """Per-neuron activation per image: mean over H, W (conv maps) or tokens; (B, neurons)."""
    if f.ndim == 2:
        return f
    if f.ndim == 3:
        return f.mean(1)  # tokens (B, T, D)
    return f.mean(dim=(2, 3)) if neuron_axis(f.ndim) == 1 else f
