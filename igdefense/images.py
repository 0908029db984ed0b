"""What every dataset here is: labelled images read a batch at a time, and the collate that keeps those batches."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ._identity import digest_indices


class LabelledImages(Dataset):
    """Images with ``labels`` (of every image) of which ``indices`` are kept (a class-balanced subset,
    say); subclasses read a batch at once in ``__getitems__(indices) -> (images, labels)``, and set
    ``source`` (what :func:`igdefense._identity.file_identity` says of the files read)."""

    labels: np.ndarray
    indices: np.ndarray
    source_identity: dict

    def identity(self) -> dict:
        """What the images served are: the source files and the indices kept (caches and
        checkpoints made from this dataset are bound to it)."""
        return {"source": self.source_identity, "indices": digest_indices(self.indices)}

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.__getitems__([i])
        return x[0], int(y[0])


def items(data, indices) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (B, C, H, W) and labels (B,) of the dataset items ``indices`` as one batch: the dataset's
    batched ``__getitems__`` where it has one (these datasets: one fancy-index read), else item by item."""
    indices = [int(i) for i in indices]
    if hasattr(data, "__getitems__"):
        got = data.__getitems__(indices)
        if isinstance(got, tuple):
            return got
    else:
        got = [data[i] for i in indices]
    return torch.stack([torch.as_tensor(x) for x, _ in got]), torch.as_tensor([int(y) for _, y in got])


def collate(batch):
    """A DataLoader's ``collate_fn`` for these datasets: ``__getitems__`` already returns a batched (x, y)."""
    return batch
