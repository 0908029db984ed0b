"""The refinement loop (Algorithm 1 of arXiv 2601.00968), resumable and data-parallel.

One round = (1) attribute: a fresh uniform sample of ``attribute_per_round`` training images
(seeded by the round) is explained with ``method`` and flagged by irrelevance and instability
(:func:`~igdefense.refine.flags.flag_spurious`); (2) train: one pass over the training split with
:func:`~igdefense.refine.loss.refinement_loss`, where every batch is also flagged by sensitivity
(input gradients are cheap) and the sampled images carry their LIME flags; (3) evaluate clean and
PGD accuracy on ``holdout`` training images drawn at random and never trained on. The
round is then checkpointed atomically; a killed run given the same ``out_dir`` resumes at the next
round (a round cut short is redone).

Under ``torchrun`` every process trains on its own shard and the gradients are averaged with
all_reduce after each backward. Not DistributedDataParallel: it does not support the double
backward of the gradient penalty (pytorch/pytorch#47562); averaging by hand gives the same update.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from ..atomic import atomic_path
from .._hooks import model_device
from .._identity import FIX, StateMismatch, check_same, model_digest, tensor_digest
from .._lock import folder_lock, start_fresh
from .._state import load_state, save_state
from .._validation import check_number, json_loads
from ..precision import Autocast, check_precision, compute_dtype, precision_name
from ..attribution import segment
from ..distributed import init_distributed, shard
from ..attribution.registry import attribution_method
from ..attacks import sign_gradient_attack
from ..images import items
from .flags import check_same_classes, flag_spurious
from .loss import refinement_loss

log = logging.getLogger(__name__)


@dataclass
class RefineConfig:
    """Every choice of a refinement run (the paper leaves the numbers open; these are ours)."""

    rounds: int = 3
    method: str = "lime"  # attribution for irrelevance and instability: "lime", "saliency", ...
    attribute_per_round: int = 256  # training images attributed per round (uniform sample, new each round)
    num_samples: int = 300  # LIME / KernelSHAP perturbations per image (~10 per superpixel)
    copies: int = 2  # perturbed copies for instability
    quantile: float = 0.8  # per-image quantile above which a score is high (benchmarks/refine_flags.py)
    alpha: float = 1.0  # weight of the FGSM term
    lam: float = 1.0  # weight of the gradient penalty (~ the CE terms at the start on smallcnn-standard)
    eps: float = 8 / 255  # FGSM step of the training example
    lr: float = 0.01  # SGD, momentum 0.9, constant: a fine-tune of a trained model
    weight_decay: float = 5e-4
    batch_size: int = 128
    steps_per_round: int | None = None  # training batches per round (per process); None: one pass over the split
    holdout: int = 500  # training images drawn at random, kept out of training, for the per-round log
    budget_cpu_seconds: float | None = None  # stop training when the process has used this much CPU time
    seed: int = 0
    # The training step (both backwards of the gradient penalty) and the attributions' model queries
    # in float32 or under bfloat16 autocast (igdefense.precision); the holdout log is measured in float32.
    precision: str = "auto"


def refine(model: nn.Module, train_data, *, reference: nn.Module | None = None, out_dir: str | os.PathLike,
           config: RefineConfig | None = None, progress: bool = True, fresh: bool = False, **options) -> nn.Module:
    """Refine ``model`` in place on ``train_data`` and return it in eval mode.

    Args:
        model: a trained classifier taking [0, 1] images (the paper refines a trained baseline).
        train_data: a dataset of (image (C, H, W) in [0, 1], label) pairs, e.g.
            ``igdefense.data.CIFAR10("train")``; ``holdout`` items drawn at random (from ``seed``;
            datasets are often sorted by class) are held out.
        reference: the model whose attributions count as right (e.g. ``zoo.load("smallcnn-robust")``);
            None skips irrelevance and sensitivity (instability only).
        out_dir: checkpoint, per-round log (``log.jsonl``) and the superpixel cache go here; a run
            given an ``out_dir`` with a checkpoint resumes from it.
        config: a :class:`RefineConfig`.
        options: or its fields as keywords (``rounds=5``).
        fresh: move what ``out_dir`` holds into a backup folder first, and start over.

    The checkpoint is bound to the run: the starting weights (a digest), the reference's, the
    training data (files and indices) and the config (more rounds of the same run resume; anything
    else is refused). A non-finite loss stops the run before the round is written.
    """
    cfg = _config(config, options)
    if reference is None and cfg.copies == 0:
        raise ValueError("nothing can be flagged: without a reference model only instability flags superpixels, "
                         "and copies=0 turns it off; pass reference= or copies >= 1")
    out = Path(out_dir)
    _, device = init_distributed()
    rank, world = shard()
    if world > 1:  # each process trains on its own device (nccl's collectives need the tensors there)
        model.to(device)
        reference = reference.to(device) if reference is not None else None
    identity = {"model": model_digest(model), "reference": None if reference is None else model_digest(reference),
                "data": _data_identity(train_data),
                "precision": precision_name(compute_dtype(cfg.precision, model_device(model)))}
    with folder_lock(out, "refinement"):
        if fresh and rank == 0:
            start_fresh(out)
        if world > 1:
            dist.barrier()
        return _refine(model, train_data, reference, out, cfg, identity, progress, rank, world)


def _refine(model, train_data, reference, out: Path, cfg: RefineConfig, identity: dict, progress: bool, rank: int,
            world: int) -> nn.Module:
    device = model_device(model)
    dtype = compute_dtype(cfg.precision, device)
    computing = model if dtype == torch.float32 else Autocast(model, dtype)  # (the same weights)
    computing_reference = reference if reference is None or dtype == torch.float32 else Autocast(reference, dtype)
    if reference is not None:
        reference.eval()
        check_same_classes(model.eval(), reference, items(train_data, torch.arange(1))[0])
    n_train = len(train_data) - cfg.holdout
    if n_train < world * cfg.batch_size:
        raise ValueError(f"{len(train_data)} images leave {n_train} to train on after the holdout of {cfg.holdout}: "
                         f"fewer than one batch of {cfg.batch_size} per process; pass more data or a smaller holdout")
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay)
    start, spent = _resume(model, opt, out, cfg, identity)
    if cfg.budget_cpu_seconds is not None and spent >= cfg.budget_cpu_seconds:  # (a rerun trained one step more)
        log.info("%s: its CPU budget (%g s) is spent after round %d: nothing more to train", out,
                 cfg.budget_cpu_seconds, start)
        return model.eval()
    segments = _segments(train_data, out / "segments.safetensors", identity["data"], rank, progress)
    train_idx, holdout_idx = holdout_split(len(train_data), cfg.holdout, cfg.seed)
    if world > 1:
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, 0)
    for rnd in range(start, cfg.rounds):
        times, t0 = {}, time.perf_counter()
        cpu0 = time.process_time()
        gen = torch.Generator("cpu").manual_seed(cfg.seed * 1000 + rnd)
        order = train_idx[torch.randperm(n_train, generator=gen)[: n_train // world * world]]
        shard = order[rank::world]
        flagged, lime_counts = _attribute(computing, train_data, segments, shard[: cfg.attribute_per_round // world],
                                          computing_reference, cfg, rnd, progress and rank == 0)
        times["attribute_s"] = time.perf_counter() - t0
        model.train()
        sums, steps, t1 = {}, 0, time.perf_counter()
        budget_hit = False
        batches = [shard[i:i + cfg.batch_size] for i in range(0, len(shard) - cfg.batch_size + 1, cfg.batch_size)]
        batches = batches[:cfg.steps_per_round]
        for idx in tqdm(batches, desc=f"refine round {rnd + 1}/{cfg.rounds}", disable=not progress or rank > 0):
            x, y = items(train_data, idx)
            x, y = x.to(device), y.to(device)
            seg = segments[idx].long().to(device)
            counts = seg.flatten(1).amax(1) + 1
            loss, parts = refinement_loss(
                computing, x, y, seg, counts, flagged=flagged.get_rows(idx, int(counts.max())),
                reference=computing_reference,
                quantile=cfg.quantile, eps=cfg.eps, alpha=cfg.alpha, lam=cfg.lam)
            if not torch.isfinite(loss):  # nothing of this round is written: the last checkpoint stays as it was
                raise FloatingPointError(f"the refinement loss is {loss.item()} at round {rnd + 1}, step {steps + 1} "
                                         f"({parts}); lower --lr (now {cfg.lr:g}) or --lam (now {cfg.lam:g})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if world > 1:
                _average_gradients(model, world)
            opt.step()
            steps += 1
            for k, v in asdict(parts).items():
                sums[k] = sums.get(k, 0) + v
            if cfg.budget_cpu_seconds is not None and _all_stop(
                    spent + time.process_time() - cpu0 >= cfg.budget_cpu_seconds, world, device):
                budget_hit = True
                break
        times["train_s"] = time.perf_counter() - t1
        model.eval()
        if world > 1:
            _average_buffers(model, world)  # batch-norm statistics: one model, not one per process
            times["weight_gap"] = _weight_gap(model)
        t2 = time.perf_counter()
        clean, robust = _holdout_accuracy(model, train_data, holdout_idx, cfg)
        times["eval_s"] = time.perf_counter() - t2
        spent += time.process_time() - cpu0
        entry = {"round": rnd + 1, "holdout_clean": clean, "holdout_pgd": robust, "steps": steps,
                 "budget_hit": budget_hit, "cpu_seconds": spent, **{k: round(v, 2) for k, v in times.items()},
                 "processes": world,
                 "lime_flags": lime_counts,
                 **{f"mean_{k}": v / max(steps, 1) for k, v in sums.items()}}
        if rank == 0:
            _checkpoint(model, opt, out, cfg, identity, rnd + 1, spent, entry)
            log.info("round %d: %s", rnd + 1, json.dumps(entry))
        if world > 1:
            dist.barrier()
        if budget_hit:
            break
    return model.eval()


def holdout_split(n_items: int, holdout: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(training indices, held-out indices): ``holdout`` items drawn at random from ``seed``."""
    order = torch.randperm(n_items, generator=torch.Generator("cpu").manual_seed(seed))
    return order[:n_items - holdout], order[n_items - holdout:]


class _Flags:
    """The round's attribution flags, looked up by training index (rows of unattributed images are empty)."""

    def __init__(self, rows: dict[int, torch.Tensor]):
        self.rows = rows

    def get_rows(self, idx: torch.Tensor, width: int) -> torch.Tensor | None:
        hits = [(k, self.rows[i]) for k, i in enumerate(idx.tolist()) if i in self.rows]
        if not hits:
            return None
        out = torch.zeros(len(idx), width, dtype=torch.bool)
        for k, r in hits:
            r = r[:width]  # columns past the image's own count are False
            out[k, :len(r)] = r
        return out


def _attribute(model, data, segments, idx, reference, cfg, rnd, progress) -> tuple[_Flags, dict]:
    model.eval()
    rows, totals = {}, {"irrelevance": 0, "instability": 0, "images": len(idx)}
    step = 64  # images per call: bounds the (images x samples) perturbed batch in memory
    for start in tqdm(range(0, len(idx), step), desc=f"attribute round {rnd + 1}", disable=not progress):
        part = idx[start:start + step]
        x, y = items(data, part)
        seg = segments[part].long()
        # sensitivity is flagged on every training batch (refinement_loss): the other two here
        flags = flag_spurious(model, x, y, seg, reference=reference, method=cfg.method, quantile=cfg.quantile,
                              copies=cfg.copies, noise=cfg.eps, num_samples=cfg.num_samples,
                              seed=cfg.seed * 1000 + rnd, criteria=("irrelevance", "instability"))
        totals["irrelevance"] += int(flags.irrelevance.sum())
        totals["instability"] += int(flags.instability.sum())
        for k, i in enumerate(part.tolist()):
            rows[i] = flags.any[k]
    return _Flags(rows), totals


def _holdout_accuracy(model, data, idx: torch.Tensor, cfg) -> tuple[float, float]:
    device = model_device(model)
    clean = robust = 0
    for start in range(0, len(idx), 250):
        x, y = items(data, idx[start:start + 250])
        x, y = x.to(device), y.to(device)
        adv = sign_gradient_attack(model, x, y, cfg.eps, steps=10, step_size=cfg.eps / 4, random_start=True,
                                   seed=cfg.seed)
        with torch.no_grad():
            clean += int((model(x).argmax(1) == y).sum())
            robust += int((model(adv).argmax(1) == y).sum())
    n = max(len(idx), 1)
    return clean / n, robust / n


def _segments(data, path: Path, data_identity: dict, rank: int, progress: bool) -> torch.Tensor:
    """SLIC superpixels of every item, (n, H, W) uint8, computed once and cached (50,000 CIFAR images: 51 MB)."""
    if path.exists():
        state = load_state(path)
        check_same("superpixels", path, state.get("data") if isinstance(state, dict) else None, data_identity,
                   "use another out_dir for other data")
        return state["segments"]
    parts = []
    for start in tqdm(range(0, len(data), 500), desc="superpixels", disable=not progress or rank > 0):
        x, _ = items(data, torch.arange(start, min(start + 500, len(data))))
        parts.append(segment(x).to(torch.uint8))
    seg = torch.cat(parts)
    if rank == 0:
        save_state(path, {"segments": seg, "data": data_identity})
    return seg


def _data_identity(data) -> dict:
    """The training data a checkpoint is bound to: an igdefense dataset's files and indices, else its
    type, length and a digest of a few items spread over it."""
    if callable(getattr(data, "identity", None)):
        return data.identity()
    idx = torch.linspace(0, len(data) - 1, min(16, len(data))).round().long().unique()
    x, y = items(data, idx)
    return {"type": type(data).__qualname__, "n": len(data), "items": tensor_digest(x, y)[:32]}


def _config(config: RefineConfig | None, options: dict) -> RefineConfig:
    fields = {f.name for f in dataclasses.fields(RefineConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise TypeError(f"unknown refine option(s) {unknown}; the options are the fields of RefineConfig: "
                        f"{sorted(fields)}")
    cfg = dataclasses.replace(config or RefineConfig(), **options)
    attribution_method(cfg.method, "superpixels")  # (unknown: one line naming the choices)
    for name in ("rounds", "batch_size", "num_samples"):
        check_number(name, getattr(cfg, name), integer=True, low=1)
    for name in ("attribute_per_round", "copies", "holdout", "seed"):
        check_number(name, getattr(cfg, name), integer=True, low=0)
    if cfg.steps_per_round is not None:
        check_number("steps_per_round", cfg.steps_per_round, integer=True, low=1)
    check_number("quantile", cfg.quantile, low=0, high=1, low_open=True, high_open=True)
    check_number("eps", cfg.eps, low=0, high=1)
    check_precision(cfg.precision)
    check_number("lr", cfg.lr, low=0, low_open=True)
    for name in ("alpha", "lam", "weight_decay"):
        check_number(name, getattr(cfg, name), low=0)
    if cfg.budget_cpu_seconds is not None:
        check_number("budget_cpu_seconds", cfg.budget_cpu_seconds, low=0, low_open=True)
    return cfg


def _resume(model, opt, out: Path, cfg: RefineConfig, identity: dict) -> tuple[int, float]:
    """Load ``out``'s checkpoint into model and optimizer: (rounds done, CPU seconds spent); (0, 0) if none."""
    _log_lines(out)  # (a bad line is said now, not after the round that would rewrite the log)
    path = out / "checkpoint.safetensors"
    if not path.exists():
        if (out / "checkpoint.pt").exists():
            raise StateMismatch(f"{out / 'checkpoint.pt'} is a pickled checkpoint of igdefense 0.1, which this "
                                "version does not unpickle: start over with --fresh (fresh=True; it is kept in a "
                                "backup folder) or use another out_dir")
        return 0, 0.0
    state = load_state(path)
    fix = FIX + " (in Python: another out_dir, or fresh=True)"
    check_same("a refinement", path, state.get("identity"), identity, fix)
    theirs = {k: v for k, v in state["config"].items() if k != "rounds"}
    check_same("a refinement", path, theirs, {k: v for k, v in asdict(cfg).items() if k != "rounds"}, fix)
    if state["round"] > cfg.rounds:  # (its weights are those of more rounds than asked for: not this run's)
        raise StateMismatch(f"{path} holds {state['round']} rounds, more than the {cfg.rounds} asked for: ask for "
                            f"{state['round']} or more, or {fix}")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    log.info("resumed from %s after round %d", out, state["round"])
    return state["round"], float(state["cpu_seconds"])


def _log_lines(out: Path) -> list[tuple[str, int]]:
    """(line, round) of each line of ``out``'s per-round log, every line checked: a JSON object with a
    round number."""
    path = out / "log.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    checked = []
    for number, line in enumerate(lines, start=1):
        try:
            entry = json_loads(line)
        except json.JSONDecodeError:
            entry = None
        rnd = entry.get("round") if isinstance(entry, dict) else None
        if isinstance(rnd, bool) or not isinstance(rnd, int) or rnd < 1:
            raise StateMismatch(f"{path}:{number} is not a round of this log (a JSON object with its round number): "
                                f"the log was edited or damaged; {FIX} (in Python: another out_dir, or fresh=True)")
        checked.append((line, rnd))
    return checked


def _checkpoint(model, opt, out: Path, cfg, identity: dict, rnd: int, spent: float, entry: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # The log first: a kill between the two leaves the round logged but not checkpointed, so the rerun redoes
    # it and its line is replaced (the other way round, the rerun would skip the round's line for good).
    lines = [line for line, r in _log_lines(out) if r < rnd] + [json.dumps(entry)]
    with atomic_path(out / "log.jsonl") as tmp:  # rewritten whole: a redone round replaces its old line
        Path(tmp).write_text("\n".join(lines) + "\n")
    save_state(out / "checkpoint.safetensors", {"model": model.state_dict(), "opt": opt.state_dict(), "round": rnd,
                                                "config": asdict(cfg), "identity": identity, "cpu_seconds": spent})


def _weight_gap(model: nn.Module) -> float:
    """Largest |weight - rank 0's weight| over all processes: 0 unless the processes diverged."""
    gap = torch.zeros((), device=model_device(model))
    for p in model.state_dict().values():
        if p.is_floating_point():
            ref = p.detach().clone()
            dist.broadcast(ref, 0)
            gap = torch.maximum(gap, (p.detach() - ref).abs().max())
    dist.all_reduce(gap, op=dist.ReduceOp.MAX)
    if gap > 0:
        raise RuntimeError(f"the processes' weights differ by up to {gap.item():.3g}: data-parallel training diverged")
    return gap.item()


def _average_gradients(model: nn.Module, world: int) -> None:
    for p in model.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= world


def _average_buffers(model: nn.Module, world: int) -> None:
    for b in model.buffers():
        if b.is_floating_point():
            dist.all_reduce(b)
            b /= world


def _all_stop(stop: bool, world: int, device: torch.device) -> bool:
    """True on every process once any process has run out of budget (all must take the same steps)."""
    if world == 1:
        return stop
    flag = torch.tensor([float(stop)], device=device)
    dist.all_reduce(flag)
    return bool(flag.item())


__all__: Sequence[str] = ("RefineConfig", "refine")
