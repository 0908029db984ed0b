"""igdefense: interpretability-guided test-time adversarial defense for PyTorch classifiers.

    import igdefense
    rankings = igdefense.lo_ir(model, probe_loader)      # once; rankings.save("r.safetensors")
    rankings = igdefense.cd_ir(model, images, class_names)   # or: CLIP-Dissect, no labels
    defended = igdefense.wrap(model, rankings, k=50)     # drop-in nn.Module
"""

__version__ = "0.1.0"

from . import robustbench_compat  # noqa: F401  (lets robustbench 1.1.1 import beside pyautoattack)
from .cd_ir import cd_ir
from .defense import IGDefense, wrap
from .evaluate import EvalResult, evaluate
from .lo_ir import lo_ir
from .rankings import Rankings, RankingsError
from .split import Site, Split, SplitError, find_split
from . import zoo

__all__ = ["IGDefense", "wrap", "lo_ir", "cd_ir", "Rankings", "RankingsError", "Site", "Split", "SplitError",
           "find_split", "evaluate", "EvalResult", "zoo", "__version__"]
