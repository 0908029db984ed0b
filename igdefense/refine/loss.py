"""The refinement loss (arXiv 2601.00968, eq. for L):

    L = CE(f(x with flagged superpixels hidden), y) + alpha * CE(f(x_adv), y) + lambda * L_reg

x_adv = x + eps * sign(grad_x CE) (FGSM from x, as the paper writes it), and L_reg the mean over
flagged superpixels j of ||grad_{x_j} CE||^2 (double backprop: only flagged pixels are penalised).
Choices the paper leaves open, made here: f in the penalty is the per-image cross-entropy (the
input-gradient regulariser of Ross & Doshi-Velez 2018); "hidden" is the superpixel's mean colour,
as LIME hides it; the sensitivity criterion is evaluated on every batch from the same input
gradient (the CE gradient is the probability's divided by p, so each image's ranking is the same
as the saliency ranking :func:`~igdefense.refine.flags.flag_spurious` uses).

Tried and dropped: the finite-difference penalty of Finlay & Oberman (2019), one forward pass
instead of the second-order backward. Its value matches (within 1% at step 1e-3) but its gradient
in the weights does not (cosine 0.54 to the exact one on smallcnn-standard at steps 1e-2 and 1e-3,
0.27 at 1e-4 in float32; 1.0 only at 1e-5 in float64): ReLU kinks and float32 rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..attribution.segments import hidden_fill, superpixel_sum
from .flags import unsupported


@dataclass
class LossParts:
    """The refinement loss's terms on one batch (floats, for the log)."""

    hidden_ce: float
    adversarial_ce: float
    penalty: float
    sensitivity_flags: int  # superpixels flagged by sensitivity in this batch
    flagged: int  # superpixels flagged by any criterion in this batch


def refinement_loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor, segments: torch.Tensor,
                    counts: torch.Tensor, *, flagged: torch.Tensor | None = None,
                    reference: nn.Module | None = None, quantile: float = 0.8, eps: float = 8 / 255,
                    alpha: float = 1.0, lam: float = 1.0) -> tuple[torch.Tensor, LossParts]:
    """The composite loss of one batch (scalar, differentiable in the model's parameters).

    Args:
        x: (B, C, H, W) images in [0, 1].
        y: (B,) labels.
        segments: (B, H, W) superpixel ids.
        counts: (B,) each image's superpixel count.
        flagged: (B, N) bool superpixels flagged beforehand (irrelevance, instability), or None.
        reference: if given, the sensitivity criterion flags superpixels on this batch too.
        quantile: the per-image quantile above which a score is high (:class:`~igdefense.refine.RefineConfig`).
        eps: the FGSM step of the training example.
        alpha: the weight of the FGSM term.
        lam: the weight of the gradient penalty.
    """
    n = int(counts.max())
    x_in = x.detach().clone().requires_grad_(True)
    grad, = torch.autograd.grad(F.cross_entropy(model(x_in), y, reduction="sum"), x_in, create_graph=lam > 0)
    flags = torch.zeros(len(x), n, dtype=torch.bool, device=x.device)
    if flagged is not None:
        flags |= flagged[:, :n].to(x.device)
    sensitive = 0
    if reference is not None:
        x_ref = x.detach().clone().requires_grad_(True)
        ref_grad, = torch.autograd.grad(F.cross_entropy(reference(x_ref), y, reduction="sum"), x_ref)
        by_sensitivity = unsupported(superpixel_sum(grad.detach().abs(), segments, n),
                                     superpixel_sum(ref_grad.abs(), segments, n), counts, quantile)
        sensitive = int(by_sensitivity.sum())
        flags |= by_sensitivity
    hide = flags.gather(1, segments.flatten(1)).view(len(x), 1, *x.shape[2:])
    x_hidden = torch.where(hide, hidden_fill(x, segments), x)
    x_adv = (x + eps * grad.detach().sign()).clamp(0, 1)
    logits = model(torch.cat([x_hidden, x_adv])).split(len(x))
    hidden_ce = F.cross_entropy(logits[0], y)
    adversarial_ce = F.cross_entropy(logits[1], y)
    reg = torch.zeros((), device=x.device)
    if lam > 0 and flags.any():  # mean over flagged superpixels of the squared gradient norm on them
        reg = (superpixel_sum(grad.pow(2), segments, n) * flags).sum() / flags.sum()
    loss = hidden_ce + alpha * adversarial_ce + lam * reg
    return loss, LossParts(hidden_ce.item(), adversarial_ce.item(), reg.item(), sensitive, int(flags.sum()))
