"""Attributions for images, batched in torch (CPU or GPU), shared by refinement and explanation tools.

    segments = igdefense.attribution.segment(images)             # (B, H, W) superpixel ids 0..n-1
    result = igdefense.attribution.lime(model, images, segments)  # .coef (B, labels, segments)
    scores = igdefense.attribution.attribute(model, images, segments, labels, method="saliency")  # (B, segments)

Methods by name (``register_attribution``): LIME, KernelSHAP, saliency and integrated gradients give
superpixel scores here; Grad-CAM and SmoothGrad give maps (:mod:`igdefense.explain`); the one
registry serves both.
"""

from .lime import LimeResult, lime, lime_samples
from .methods import METHODS, attribute
from .registry import AttributionMethod, attribution_method, attribution_methods, register_attribution
from .segments import hidden_fill, segment, superpixel_sum

__all__ = ["attribute", "METHODS", "AttributionMethod", "register_attribution", "attribution_method",
           "attribution_methods", "lime", "lime_samples", "LimeResult", "segment", "hidden_fill", "superpixel_sum"]
