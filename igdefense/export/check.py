"""Parity of an exported model against the PyTorch defended model on real images."""

from __future__ import annotations

from typing import Iterable

import torch

from ..defense import IGDefense
from ..stats import paired_difference
from .runtime import OnnxDefense


def check_parity(session: OnnxDefense, defended: IGDefense, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
                 seed: int = 0) -> dict:
    """Compare ONNX and PyTorch logits on labelled ``batches``.

    With a noise input, both get the same noise: reports max |logit difference| and the number of
    argmax disagreements. With in-graph noise, only accuracies can be compared (each draws its own noise): reports
    both, their paired difference and whether its 95% interval holds 0 (``within_noise``). ``"parity"``:
    the verdict, True when the logits agree to 1e-4 with no argmax disagreement (a noise input), or
    when the accuracies' interval holds 0 (in-graph noise: a fixed gap, 0.005, failed on one image in 200).
    """
    gen = torch.Generator("cpu").manual_seed(seed)
    n = max_diff = disagree = 0
    torch_right, onnx_right = [], []
    defended.eval()
    device = defended.class_masks.device
    for x, y in batches:
        x, y = x.to(device), y.to(device)  # the session takes them on any device and answers on theirs
        with torch.no_grad():
            if session.takes_noise:
                noise = (torch.randn((defended.n_samples, *x.shape), generator=gen) * defended.sigma).to(device)
                ref, got = defended(x, noise=noise), session(x, noise)
                max_diff = max(max_diff, (ref - got).abs().max().item())
                disagree += (ref.argmax(1) != got.argmax(1)).sum().item()
            else:
                ref, got = defended(x), session(x)
        torch_right.append((ref.argmax(1) == y).cpu())
        onnx_right.append((got.argmax(1) == y).cpu())
        n += len(y)
    torch_right, onnx_right = torch.cat(torch_right), torch.cat(onnx_right)
    gap = paired_difference(torch_right, onnx_right)
    out = {"images": n, "noise": "input" if session.takes_noise else "graph", "provider": session.provider,
           "pytorch_accuracy": torch_right.float().mean().item(), "onnx_accuracy": onnx_right.float().mean().item(),
           "accuracy_difference": str(gap), "within_noise": gap.low <= 0 <= gap.high}
    if session.takes_noise:
        out.update(max_abs_logit_diff=max_diff, argmax_disagreements=disagree)
    out["parity"] = max_diff <= 1e-4 and disagree == 0 if session.takes_noise else out["within_noise"]
    return out
