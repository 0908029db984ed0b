"""Attribution-guided model refinement (arXiv 2412.18952, 2601.00968): flag superpixels the model
relies on but should not, and train that reliance away.

    model = igdefense.refine.refine(model, igdefense.data.CIFAR10("train"),
                                    reference=igdefense.zoo.load("smallcnn-robust"), out_dir="runs/refine")
"""

from .flags import CRITERIA, Flags, flag_spurious
from .loop import RefineConfig, refine
from .loss import LossParts, refinement_loss

__all__ = ["refine", "RefineConfig", "flag_spurious", "Flags", "CRITERIA", "refinement_loss", "LossParts"]
