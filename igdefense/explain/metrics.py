"""How far two saliency maps of the same images are apart: the metrics of the explanation-robustness
literature (arXiv 2412.11119 uses IoU and RMSE; Ghorbani et al., AAAI 2019, top-k intersection and
Spearman's rank correlation), batched over (B, H, W) maps of any scale.

Every function returns one value per image, (B,) float64: 1 (or 0 for RMSE) on identical maps.
"""

from __future__ import annotations

import math

import torch


def check_maps(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (B, H, W) maps of one shape, finite, as float64 on the CPU."""
    for name, m in (("first", a), ("second", b)):
        if not isinstance(m, torch.Tensor) or m.ndim != 3:
            shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"the {name} maps must be a (B, H, W) tensor, got {shape}")
        if not torch.isfinite(m).all():
            raise ValueError(f"the {name} maps contain NaN or Inf")
    if a.shape != b.shape:
        raise ValueError(f"maps of different shapes: {tuple(a.shape)} and {tuple(b.shape)}; compare maps of the "
                         "same images at the same resolution")
    return a.detach().double().cpu(), b.detach().double().cpu()


def _top(m: torch.Tensor, k: int) -> torch.Tensor:
    """(B, H*W) bool: the k largest pixels of each map (ties broken by position), less any at the map's
    minimum: a flat background (Grad-CAM's zeros) holds no top pixel, else two maps whose few bright
    pixels lie apart would share the background pixels picked by position to make up k."""
    flat = m.flatten(1)
    out = torch.zeros_like(flat, dtype=torch.bool)
    return out.scatter_(1, flat.topk(k, dim=1).indices, True) & (flat > flat.min(1, keepdim=True).values)


def _count(q: float, n: int) -> int:
    if not 0 < q <= 100:
        raise ValueError(f"q is a percentage of the pixels, in (0, 100]; got {q}")
    return max(1, math.ceil(q / 100 * n))


def iou_top(a: torch.Tensor, b: torch.Tensor, q: float = 20) -> torch.Tensor:
    """Intersection over union of the top-q% pixels of each map."""
    a, b = check_maps(a, b)
    k = _count(q, a[0].numel())
    ta, tb = _top(a, k), _top(b, k)
    return (ta & tb).sum(1).double() / (ta | tb).sum(1).double()  # (NaN where both maps are flat)


def topk_intersection(a: torch.Tensor, b: torch.Tensor, q: float = 20) -> torch.Tensor:
    """Fraction of the top-q% pixels of ``a`` that are also in the top-q% of ``b`` (of fewer than q%
    where ``a`` has fewer above its minimum; NaN where it has none)."""
    a, b = check_maps(a, b)
    k = _count(q, a[0].numel())
    ta = _top(a, k)
    return (ta & _top(b, k)).sum(1).double() / ta.sum(1).double()


def normalise(m: torch.Tensor) -> torch.Tensor:
    """Min-max scale each map to [0, 1]; a constant map becomes 0."""
    flat = m.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(m)


def rmse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Root mean squared difference of the min-max normalised maps (0 identical, at most 1)."""
    a, b = check_maps(a, b)
    return (normalise(a) - normalise(b)).pow(2).flatten(1).mean(1).sqrt()


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Spearman's rank correlation of the pixels (ties get their average rank, as LIME's maps are
    constant on each superpixel); 0 where a map is constant."""
    from scipy.stats import rankdata

    a, b = check_maps(a, b)
    ra = torch.from_numpy(rankdata(a.flatten(1).numpy(), axis=1))
    rb = torch.from_numpy(rankdata(b.flatten(1).numpy(), axis=1))
    ra, rb = ra - ra.mean(1, keepdim=True), rb - rb.mean(1, keepdim=True)
    denominator = (ra.norm(dim=1) * rb.norm(dim=1))
    return torch.where(denominator > 0, (ra * rb).sum(1) / denominator.clamp_min(1e-12), torch.zeros(len(a)))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Structural similarity (scikit-image, 7 x 7 window or the map's size, data range 1) of the
    min-max normalised maps."""
    from skimage.metrics import structural_similarity

    a, b = check_maps(a, b)
    side = min(a.shape[1:])
    window = min(7, side if side % 2 else side - 1)  # odd, and no larger than the map
    if window < 3:
        raise ValueError(f"SSIM needs maps of at least 3 x 3 pixels, got {tuple(a.shape[1:])}")
    a, b = normalise(a).numpy(), normalise(b).numpy()
    return torch.tensor([structural_similarity(x, y, data_range=1.0, win_size=window) for x, y in zip(a, b)],
                        dtype=torch.float64)


METRICS = {"iou_top": iou_top, "rmse": rmse, "spearman": spearman, "topk_intersection": topk_intersection,
           "ssim": ssim}
LOWER_IS_CLOSER = {"rmse"}  # a distance; the others are similarities


def compare(a: torch.Tensor, b: torch.Tensor, q: float = 20) -> dict[str, torch.Tensor]:
    """Every metric of two batches of maps: {name: (B,)}."""
    return {name: fn(a, b, q) if name in ("iou_top", "topk_intersection") else fn(a, b)
            for name, fn in METRICS.items()}
