"""Paired confidence interval of an accuracy difference."""

import math

import pytest
import torch

from igdefense.stats import paired_difference


def test_by_hand():
    a = torch.tensor([1, 1, 0, 0, 1, 0, 1, 0], dtype=torch.bool)
    b = torch.tensor([1, 1, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    r = paired_difference(a, b)
    # Agresti-Min: 2 gained, 1 lost of 8; each cell of the 2x2 table + 0.5, so 10 images in all.
    gain, loss = 2.5 / 10, 1.5 / 10
    se = math.sqrt((gain + loss - (gain - loss) ** 2) / 10)
    assert r.difference == pytest.approx(1 / 8)
    assert (r.low, r.high) == pytest.approx((0.1 - 1.959964 * se, 0.1 + 1.959964 * se))
    assert (r.b_only, r.a_only, r.n) == (2, 1, 8)
    assert not r.significant and "within noise" in str(r)


def test_no_differing_image_is_not_certainty():
    # 200 images, none differs: the plain Wald interval would be [0, 0]; about +-1 point is honest.
    same = torch.arange(200) < 60
    r = paired_difference(same, same.clone())
    assert r.difference == 0 and not r.significant
    assert -0.012 < r.low < -0.008 and 0.008 < r.high < 0.012


def test_matches_the_wald_interval_when_many_images_differ():
    gen = torch.Generator().manual_seed(0)
    a, b = torch.rand(5000, generator=gen) < 0.5, torch.rand(5000, generator=gen) < 0.55
    r = paired_difference(a, b)
    d = b.double() - a.double()
    half = 1.959964 * math.sqrt(d.var().item() / 5000)
    assert (r.low, r.high) == pytest.approx((d.mean().item() - half, d.mean().item() + half), abs=2e-4)


def test_clear_gain_is_significant():
    a = torch.zeros(1000, dtype=torch.bool)
    b = torch.arange(1000) < 100
    assert paired_difference(a, b).significant


def test_shapes_must_match():
    with pytest.raises(ValueError, match="same images"):
        paired_difference(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
