"""Re-attacking a finished evaluation's survivors: does a defense's worst-case gain survive attacks
the evaluation did not run, with other random starts and noise draws?

Only the images the model still gets right under every attack of the evaluation are attacked (in
cascade); the new attacks can only lower its worst case, and the baseline keeps its own, so the
paired gain is a conservative one. The evaluation itself must be finished and be this model's (the
caller resumes it first: ``igdefense eval ... --add-attacks`` does, which checks every identity).
"""

from __future__ import annotations

import os
from typing import Iterable

import torch
from torch import nn

from ..attacks import AttackSettings
from .evaluate import EvalResult, evaluate


def attack_survivors(model: nn.Module, finished: EvalResult, data: Iterable, attacks: list[str],
                     settings: AttackSettings, *, log_path: str | os.PathLike | None = None,
                     batch_size: int | None = None, progress: bool = True) -> tuple[torch.Tensor, EvalResult]:
    """``(worst case after, the added attacks' result)``: ``finished.worst_case`` (per image, in the
    order of ``data``, the data ``finished`` was computed on) with every survivor the re-evaluation
    finds wrong set False: its clean image under the new seed's noise draws (a randomized model's),
    then each of ``attacks``. That is the worst case over both seeds, as :func:`~igdefense.eval.runs.worst_over_runs`
    counts it; ``added.correct["clean"]`` tells the clean re-draws from the attacks' breaks. The added
    attacks' log (``log_path``) resumes as any evaluation's, by batch: ``batch_size`` survivors a batch
    (None: all in one), so that a long re-attack is kept in pieces a stopped run does not lose."""
    worst = finished.worst_case.clone()
    xs, ys, seen = [], [], 0
    for x, y in data:  # (streamed: only the survivors are kept)
        keep = worst[seen:seen + len(y)].to(y.device)
        xs.append(x[keep])
        ys.append(y[keep])
        seen += len(y)
    if seen != len(worst):
        raise ValueError(f"the evaluation holds {len(worst)} images, the data {seen}: re-attack the images it was "
                         "computed on")
    alive = worst.nonzero().squeeze(1)
    if not len(alive):
        return worst, EvalResult({"clean": torch.zeros(0, dtype=torch.bool)})
    x, y = torch.cat(xs), torch.cat(ys)
    step = batch_size or len(y)
    batches = [(x[i:i + step], y[i:i + step]) for i in range(0, len(y), step)]
    added = evaluate(model, batches, attacks, settings=settings, cascade=True,
                     log_path=log_path, progress=progress, desc=f"re-attacking {len(alive)} survivors")
    worst[alive[~added.worst_case.to(alive.device)]] = False
    return worst, added
