"""Explanation robustness: saliency maps of a batch and how far an attack moves them."""

from .metrics import METRICS, compare, iou_top, rmse, spearman, ssim, topk_intersection

__all__ = ["METRICS", "compare", "iou_top", "rmse", "spearman", "ssim", "topk_intersection"]
