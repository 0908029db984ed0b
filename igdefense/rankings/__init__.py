"""Neuron importance rankings per class: the file format, LO-IR (leave-one-out, labelled probe
images), CD-IR (CLIP-Dissect, no labels) and comparing two rankings."""

from .cd_ir import cd_ir
from .compare import plot_jaccard, topk_jaccard
from .format import Rankings, RankingsError
from .lo_ir import lo_ir

__all__ = ["Rankings", "RankingsError", "cd_ir", "lo_ir", "plot_jaccard", "topk_jaccard"]
