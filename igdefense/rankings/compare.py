"""Compare two rankings of the same model: overlap of their per-class top-k neuron sets."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..atomic import atomic_path
from .format import Rankings


def topk_jaccard(a: Rankings, b: Rankings, k: int) -> torch.Tensor:
    """Jaccard index [classes_a, classes_b] between class i's top-k in ``a`` and class j's in ``b``.

    The diagonal is the per-class agreement of the two methods; off-diagonal entries show how
    much classes share neurons.
    """
    if a.num_neurons != b.num_neurons:
        raise ValueError(f"rankings rank different layers: {a.num_neurons} vs {b.num_neurons} neurons")
    ma, mb = a.mask(k), b.mask(k)  # (classes, neurons) 0/1
    inter = ma @ mb.T
    return inter / (2 * k - inter)


def plot_jaccard(matrix: torch.Tensor, path: str | os.PathLike, row_names, col_names, title: str = "") -> Path:
    """Heat map of a Jaccard matrix, written to ``path`` (PNG/PDF by extension; none: .png added);
    returns the path written."""
    from matplotlib.figure import Figure  # (no pyplot: a notebook's backend stays as it is)

    fig = Figure(figsize=(1 + 0.55 * len(col_names), 1 + 0.5 * len(row_names)))
    ax = fig.subplots()
    im = ax.imshow(matrix.numpy(), vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(len(col_names)), col_names, rotation=60, ha="right")
    ax.set_yticks(range(len(row_names)), row_names)
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] < 0.5 else "black")
    fig.colorbar(im, ax=ax, label="Jaccard of top-k sets")
    ax.set_title(title)
    fig.tight_layout()
    path = Path(path) if Path(path).suffix else Path(path).with_suffix(".png")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    return path
