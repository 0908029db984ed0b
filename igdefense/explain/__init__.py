"""Explanation robustness: saliency maps of a batch and how far an attack moves them."""

from .maps import MAP_METHODS, cam_layer, explain
from .metrics import METRICS, compare, iou_top, rmse, spearman, ssim, topk_intersection
from .robustness import Study, explanation_robustness, separation

__all__ = ["MAP_METHODS", "METRICS", "Study", "cam_layer", "compare", "explain", "explanation_robustness", "iou_top",
           "rmse", "separation", "spearman", "ssim", "topk_intersection"]
