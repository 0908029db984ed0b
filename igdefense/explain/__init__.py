"""Explanation robustness: saliency maps of a batch and how far an attack moves them."""

from .maps import METHODS, cam_layer, explain
from .metrics import METRICS, compare, iou_top, rmse, spearman, ssim, topk_intersection

__all__ = ["METHODS", "METRICS", "cam_layer", "compare", "explain", "iou_top", "rmse", "spearman", "ssim",
           "topk_intersection"]
