"""torchrun support, for every job: join the process group, this process's rank, whether it writes files."""

from __future__ import annotations

import os

import torch


def init_distributed() -> tuple[int, torch.device]:
    """Join the process group when started by torchrun (gloo on CPU, nccl on GPU); (rank, device)."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    if torch.cuda.is_available():
        return rank, torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return rank, torch.device("cpu")


def shard() -> tuple[int, int]:
    """(rank, world size) under torch.distributed (e.g. torchrun), else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    """True outside torchrun and on its rank 0 (the process that writes files)."""
    return shard()[0] == 0
