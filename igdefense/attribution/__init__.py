"""Attributions for images, batched in torch (CPU or GPU), shared by refinement and explanation tools.

    segments = igdefense.attribution.segment(images)             # (B, H, W) superpixel ids 0..n-1
    result = igdefense.attribution.lime(model, images, segments)  # .coef (B, labels, segments)
"""

from .lime import LimeResult, lime, lime_samples
from .segments import segment

__all__ = ["lime", "lime_samples", "LimeResult", "segment"]
