"""The sanity checks pass on an honest model and catch a gradient-masking one."""

import torch
from torch import nn

from igdefense.attacks import AttackSettings
from igdefense.sanity import run_sanity_checks


class _Quantize(nn.Module):
    """Input quantization: its gradient is zero almost everywhere (classic gradient masking)."""

    def forward(self, x):
        return torch.round(x * 15) / 15


def _checks(model, batch):
    x, y = batch[0][:10], batch[1][:10]
    settings = AttackSettings(n_iter=20, square_queries=300)
    return {c.name: c for c in run_sanity_checks(model, x, y, settings=settings)}


def test_honest_model_passes(standard_cnn, test_batch):
    checks = _checks(standard_cnn, test_batch)
    assert all(c.passed for c in checks.values()), [str(c) for c in checks.values()]


def test_gradient_masking_is_caught(standard_cnn, test_batch):
    masked = nn.Sequential(_Quantize(), standard_cnn).eval()
    checks = _checks(masked, test_batch)
    assert not checks["gradients"].passed
    assert not checks["white-box vs black-box"].passed or not checks["eps sweep"].passed
