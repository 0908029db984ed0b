"""torchrun support, for every job: join the process group, this process's rank, whether it writes files."""

from __future__ import annotations

import os

import torch


def default_device() -> torch.device:
    """Where this process computes: its GPU (torchrun's LOCAL_RANK-th, else the first) when CUDA is
    available, else the CPU (``CUDA_VISIBLE_DEVICES=`` forces the CPU)."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.device_count() == 1:  # one GPU visible: a launcher that gives each rank its own (SLURM)
        local = 0
    if local >= torch.cuda.device_count():
        raise ValueError(f"this process is local rank {local} but the machine has {torch.cuda.device_count()} GPU(s): "
                         f"start at most one process per GPU (torchrun --nproc-per-node {torch.cuda.device_count()})")
    return torch.device("cuda", local)


def init_distributed() -> tuple[int, torch.device]:
    """Join the process group when started by torchrun (gloo on CPU, nccl on GPU, each process on its
    own GPU); (rank, :func:`default_device`)."""
    device = default_device()
    if device.type == "cuda":
        torch.cuda.set_device(device)  # nccl's collectives run on the current device: one per process
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    return rank, device


def shard() -> tuple[int, int]:
    """(rank, world size) under torch.distributed (e.g. torchrun), else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0 (the process that writes files)."""
    return shard()[0] == 0


def start_fresh_once(folder: str | os.PathLike):
    """``--fresh`` under torchrun or not: one process moves what ``folder`` holds into a backup folder
    (:func:`igdefense._lock.start_fresh`), the others wait for it. The backup folder, or None."""
    from ._lock import start_fresh

    rank, world = shard()
    backup = start_fresh(folder) if rank == 0 else None
    if world > 1:
        torch.distributed.barrier()
    return backup
