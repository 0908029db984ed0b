"""igdefense: interpretability-guided test-time adversarial defense for PyTorch classifiers.

    import igdefense
    rankings = igdefense.lo_ir(model, probe_loader)      # once; rankings.save("r.safetensors")
    rankings = igdefense.cd_ir(model, images, class_names)   # or: CLIP-Dissect, no labels
    defended = igdefense.wrap(model, rankings, k=50)     # drop-in nn.Module
"""

from ._version import __version__

from .defense import IGDefense, RandomizedDefense
from .eval import EvalResult, evaluate
from .rankings import Rankings, RankingsError, cd_ir, lo_ir
from .split import Site, Split, SplitError, find_split
from .specs import DataSpec, DefenseSpec, ModelSpec, wrap
from . import zoo

__all__ = ["IGDefense", "RandomizedDefense", "wrap", "lo_ir", "cd_ir", "Rankings", "RankingsError", "Site", "Split",
           "SplitError", "find_split", "evaluate", "EvalResult", "zoo", "ModelSpec", "DataSpec", "DefenseSpec",
           "__version__"]
