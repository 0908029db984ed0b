"""Explanation-robustness metrics on real attribution maps and on maps whose answer is known."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from igdefense.explain import compare, iou_top, rmse, spearman, ssim, topk_intersection


@pytest.fixture(scope="module")
def saliency(standard_cnn, test_batch):
    """Input-gradient maps (B, 32, 32) of the zoo's standard model on real test images."""
    x, y = test_batch
    x = x[:8].clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(standard_cnn(x), y[:8]).backward()
    return x.grad.abs().sum(1)


def test_identical_maps_score_perfectly(saliency):
    for name, value in compare(saliency, saliency.clone()).items():
        expected = 0.0 if name == "rmse" else 1.0
        assert torch.allclose(value, torch.full_like(value, expected), atol=1e-9), name


def test_shifted_square_has_known_overlap():
    a = torch.zeros(1, 10, 10)
    a[0, 3:7, 2:6] = 1  # 16 pixels: the top 16% exactly
    b = torch.roll(a, shifts=2, dims=2)  # the square two columns right: 8 pixels shared
    assert iou_top(a, b, q=16).item() == pytest.approx(8 / 24)
    assert topk_intersection(a, b, q=16).item() == pytest.approx(8 / 16)
    assert rmse(a, b).item() == pytest.approx((16 / 100) ** 0.5)  # 16 pixels differ by 1


def test_rank_and_structure_metrics_match_scipy_and_skimage(saliency):
    other = saliency.roll(1, dims=0)  # the maps of other images: far apart
    coarse = torch.nn.functional.avg_pool2d(saliency[:, None], 4)[:, 0].repeat_interleave(4, 1).repeat_interleave(
        4, 2)  # piecewise constant like LIME's: many ties
    for a, b in ((saliency, other), (saliency, coarse)):
        rho = spearman(a, b)
        ref = [spearmanr(x.flatten().numpy(), z.flatten().numpy()).statistic for x, z in zip(a, b)]
        assert torch.allclose(rho, torch.tensor(ref, dtype=torch.float64), atol=1e-9)
        n = lambda m: ((m - m.min()) / (m.max() - m.min())).double().numpy()  # noqa: E731
        ref = [structural_similarity(n(x), n(z), data_range=1.0, win_size=7) for x, z in zip(a, b)]
        assert torch.allclose(ssim(a, b), torch.tensor(ref, dtype=torch.float64), atol=1e-9)
    assert spearman(saliency, -saliency).max() < -0.99
    assert (compare(saliency, other)["iou_top"] < 0.6).all()


def test_bad_input():
    a = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="different shapes"):
        iou_top(a, torch.rand(2, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        rmse(a[0], a[0])
    for q in (0, -5, 101):
        with pytest.raises(ValueError, match=r"\(0, 100\]"):
            iou_top(a, a, q=q)
    with pytest.raises(ValueError, match="NaN"):
        spearman(a, a * float("nan"))
    with pytest.raises(ValueError, match="3 x 3"):
        ssim(torch.rand(1, 2, 2), torch.rand(1, 2, 2))
