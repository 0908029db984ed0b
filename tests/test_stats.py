"""Paired confidence interval of an accuracy difference."""

import math

import pytest
import torch

from igdefense.stats import paired_difference


def test_by_hand():
    a = torch.tensor([1, 1, 0, 0, 1, 0, 1, 0], dtype=torch.bool)
    b = torch.tensor([1, 1, 1, 1, 0, 0, 1, 0], dtype=torch.bool)
    r = paired_difference(a, b)
    d = torch.tensor([0, 0, 1, 1, -1, 0, 0, 0], dtype=torch.float64)
    se = math.sqrt(d.var().item() / 8)
    assert r.difference == pytest.approx(1 / 8)
    assert (r.low, r.high) == pytest.approx((1 / 8 - 1.959964 * se, 1 / 8 + 1.959964 * se))
    assert (r.b_only, r.a_only, r.n) == (2, 1, 8)
    assert not r.significant and "within noise" in str(r)


def test_clear_gain_is_significant():
    a = torch.zeros(1000, dtype=torch.bool)
    b = torch.arange(1000) < 100
    assert paired_difference(a, b).significant


def test_shapes_must_match():
    with pytest.raises(ValueError, match="same images"):
        paired_difference(torch.ones(3, dtype=torch.bool), torch.ones(4, dtype=torch.bool))
