"""Training recipe for the shipped CIFAR-10 models: fast adversarial training (FGSM with random
start, Wong et al. 2020, "Fast is better than free", or N-FGSM, de Jorge et al. 2022, "Make some
noise") or standard training, one-cycle LR, for the zoo's SmallCNN or the paper-scale PreAct
ResNet-18 (``arch``).

Re-run with ``igdefense train --robust -o robust.safetensors`` (see the model cards). The same code
runs on a GPU (the default device when there is one) and on a CPU, in the precision
:mod:`igdefense.precision` chooses (``precision``: bfloat16 autocast on a GPU and on a CPU with a
bfloat16 matrix unit, float32 elsewhere; weights, optimizer state and losses stay float32), with
channels-last convolutions; the random draws (order, crops, flips, FGSM starts) come from one CPU
generator, so a run's data stream is the same on any device.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ._identity import StateMismatch, check_same
from ._state import load_state, save_state
from ._validation import check_number
from .attacks import fgsm_from_noise
from .data import cifar10_loader
from .distributed import default_device
from .precision import autocast, check_precision, compute_dtype, precision_name
from .zoo.models import ARCHITECTURES, SmallCNN
from .zoo.weights_file import save_weights

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    robust: bool = False  # True: adversarial training (``attack``); False trains on clean images only
    epochs: int = 10  # passes over the training split
    batch_size: int = 128  # per-image cost on 2 CPU cores is lowest near 128
    lr_max: float = 0.2  # peak of the one-cycle schedule
    weight_decay: float = 5e-4
    eps: float = 8 / 255  # L-inf radius of the training attack
    alpha: float = 10 / 255  # FGSM-RS's step from its random start (Wong et al. use 1.25 * eps)
    attack: str = "fgsm-rs"  # robust training's attack: fgsm-rs (Wong et al. 2020) or n-fgsm (de Jorge et al. 2022: a step of eps from a 2 * eps noise start, not clipped back)
    widths: tuple[int, int, int] = (32, 64, 128)  # SmallCNN's stages
    seed: int = 0
    arch: str = "smallcnn"  # the architecture (igdefense.zoo.models.ARCHITECTURES)
    per_class: int | None = None  # a class-balanced subset of the training split (None: all of it)
    precision: str = "auto"  # compute the passes in float32 (fp32) or under bfloat16 autocast (bf16); auto: bf16 where measured faster (igdefense.precision)

    def build(self) -> nn.Module:
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; choose from {sorted(ARCHITECTURES)}")
        return SmallCNN(tuple(self.widths)) if self.arch == "smallcnn" else ARCHITECTURES[self.arch]()


def load_checkpoint(path: str | os.PathLike) -> tuple[nn.Module, int, TrainConfig]:
    """``(model, epochs done, config)`` of a training run's checkpoint (``OUT.ckpt``, written after every
    epoch): a run still under way, evaluated as far as it has got."""
    state = load_state(path)
    try:
        config = TrainConfig(**{**state["identity"]["config"], "widths": tuple(state["identity"]["config"]["widths"])})
        model = config.build()
        model.load_state_dict(state["model"])
        epoch = state["epoch"]
        if type(epoch) is not int or epoch < 0:
            raise TypeError(f"epoch={epoch!r} is not a whole number")
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"{path} is not a checkpoint igdefense train wrote ({type(e).__name__}: {e})") from None
    return model.eval(), epoch, config


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop with 4-pixel zero padding and random horizontal flip, per image, on the images'
    device (the draws from ``gen``, on the CPU)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    dx, dy = (d.to(x.device) for d in torch.randint(0, 9, (2, b), generator=gen))
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H): the crop's rows in the padded image
    cols = dx[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    return padded[batch, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)  # (B, H, W, C) -> NCHW


TRAINING_ATTACKS = ("fgsm-rs", "n-fgsm")


def _training_attack(cfg: TrainConfig):
    if cfg.attack == "n-fgsm":  # de Jorge et al.'s defaults: noise 2 * eps, step eps
        return lambda model, x, y, gen: fgsm_from_noise(model, x, y, cfg.eps, cfg.eps, gen, noise=2 * cfg.eps, project=False)
    return lambda model, x, y, gen: fgsm_from_noise(model, x, y, cfg.eps, cfg.alpha, gen)


def train(cfg: TrainConfig, out: str | os.PathLike, data_root=None, *, fresh: bool = False,
          device: str | torch.device | None = None, progress: bool = True) -> nn.Module:
    """Train ``cfg.arch`` on the CIFAR-10 training split; writes weights to ``out`` (safetensors,
    with the config in its metadata: :func:`igdefense.zoo.weights_file.load_weights` rebuilds the model from the file alone).

    A checkpoint ``out + '.ckpt'`` (safetensors and JSON) is written after every epoch and resumed
    from if present, when it was made with the same config and training data (else refused);
    ``fresh`` moves it aside (``.ckpt.bak``, or ``.bak2``... beside an earlier one) and starts over.
    ``device``: None is the GPU when there is one, else the CPU; the checkpoint records the precision
    it was computed in (a run does not resume in another).
    """
    for name in ("epochs", "batch_size"):
        check_number(name, getattr(cfg, name), integer=True, low=1)
    check_number("seed", cfg.seed, integer=True, low=0)
    for name in ("lr_max", "eps", "alpha"):
        check_number(name, getattr(cfg, name), low=0, low_open=name == "lr_max", high=None if name == "lr_max" else 1)
    check_number("weight_decay", cfg.weight_decay, low=0)
    if cfg.per_class is not None:
        check_number("per_class", cfg.per_class, integer=True, low=1)
    if cfg.attack not in TRAINING_ATTACKS:
        raise ValueError(f"attack must be one of {', '.join(TRAINING_ATTACKS)}, not {cfg.attack!r}")
    check_precision(cfg.precision)
    device = torch.device(device) if device is not None else default_device()
    dtype = compute_dtype(cfg.precision, device)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator("cpu").manual_seed(cfg.seed)
    model = cfg.build().to(device, memory_format=torch.channels_last)  # ~1.4x faster convs on CPU, the norm on GPUs
    attack = _training_attack(cfg)
    loader = cifar10_loader("train", per_class=cfg.per_class, batch_size=cfg.batch_size, shuffle=True,
                            root=data_root, seed=cfg.seed)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr_max, momentum=0.9, nesterov=True,
                          weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr_max, epochs=cfg.epochs,
                                                steps_per_epoch=len(loader), pct_start=0.4)
    ckpt = Path(str(out) + ".ckpt")
    identity = {"config": json.loads(json.dumps(asdict(cfg))), "data": loader.dataset.identity(),
                "precision": precision_name(dtype)}
    if fresh and ckpt.exists():  # (an earlier backup is kept too: .bak, .bak2, ...)
        backup, n = ckpt.with_name(ckpt.name + ".bak"), 1
        while backup.exists():
            n += 1
            backup = ckpt.with_name(f"{ckpt.name}.bak{n}")
        os.replace(ckpt, backup)
    start, before = 0, 0.0  # (epochs done, and the seconds they took, in earlier sessions)
    if ckpt.exists():
        state = load_state(ckpt)  # (on the CPU: load_state_dict copies into the model's device)
        check_same("a training run", ckpt, state.get("identity"), identity,
                   f"use another -o, or start over with --fresh (it is kept as {ckpt.name}.bak)")
        model.load_state_dict(state["model"]); opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"]); gen.set_state(state["gen"])
        torch.set_rng_state(state["rng"]); loader.generator.set_state(state["loader_gen"])
        start = state["epoch"]
        before = state.get("seconds")  # (checkpoints before it was kept: None)
        if before is not None and (isinstance(before, bool) or not isinstance(before, (int, float))
                                   or not 0 <= before < float("inf")):
            raise StateMismatch(f"{ckpt} is not a checkpoint igdefense wrote (seconds={before!r}): start over with "
                                "--fresh")
        log.info("resumed from %s at epoch %d", ckpt, start)
    log.info("training %s on %s in %s", cfg.arch, device, precision_name(dtype))
    t0 = time.time() - (before or 0.0)  # (the whole run's time, over every session that resumed it)
    for epoch in range(start, cfg.epochs):
        model.train()
        correct = seen = 0
        loss_sum = 0.0
        for x, y in tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False, disable=not progress):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            x = _augment(x, gen).contiguous(memory_format=torch.channels_last)
            with autocast(dtype, device):
                if cfg.robust:
                    x = attack(model, x, y, gen)
                logits = model(x).float()
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += loss.item() * len(y)
            correct += (logits.argmax(1) == y).sum().item()
            seen += len(y)
        log.info("epoch %d/%d  train loss %.4f  train acc %.4f  elapsed %.0fs", epoch + 1, cfg.epochs,
                 loss_sum / seen, correct / seen, time.time() - t0)
        save_state(ckpt, {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
                          "gen": gen.get_state(), "rng": torch.get_rng_state(),
                          "loader_gen": loader.generator.get_state(), "epoch": epoch + 1, "identity": identity,
                          "seconds": time.time() - t0})
    model.eval()
    model = model.to(memory_format=torch.contiguous_format)
    seconds = f"{time.time() - t0:.0f}" + ("" if before is not None else " (its sessions before the last: not kept)")
    save_weights(model, out, asdict(cfg), train_seconds=seconds, precision=precision_name(dtype),
                 device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")
    return model
