"""The sanity checks pass on an honest model and catch a gradient-masking one."""

import pytest
import torch
from torch import nn

from igdefense.attacks import AttackSettings
from igdefense.eval.sanity import run_sanity_checks, spread_sample


class _Quantize(nn.Module):
    """Input quantization: its gradient is zero almost everywhere (classic gradient masking)."""

    def forward(self, x):
        return torch.round(x * 15) / 15


def _checks(model, batch, base_model=None):
    x, y = batch[0][:10], batch[1][:10]
    settings = AttackSettings(n_iter=20, square_queries=300)
    return {c.name: c for c in run_sanity_checks(model, x, y, settings=settings, base_model=base_model)}


def test_honest_model_passes(standard_cnn, test_batch):
    checks = _checks(standard_cnn, test_batch)
    assert all(c.passed for c in checks.values()), [str(c) for c in checks.values()]
    # a tenth of the steps it was given, said as they were (it said "100 steps" and ran 10 at any budget)
    assert "apgd-ce 20 steps" in checks["more steps"].detail and "2 steps" in checks["more steps"].detail


def test_gradient_masking_is_caught(standard_cnn, test_batch):
    masked = nn.Sequential(_Quantize(), standard_cnn).eval()
    checks = _checks(masked, test_batch, base_model=standard_cnn)
    assert not checks["gradients"].passed
    assert not checks["white-box vs black-box"].passed or not checks["eps sweep"].passed
    # the unmasked model's examples break the masked one that its own (zero) gradients cannot
    assert not checks["white-box vs transfer"].passed, checks["white-box vs transfer"]


def test_the_defense_also_faces_transfer_eot_and_bpda(robust_cnn, test_batch):
    from igdefense import IGDefense, zoo

    defended = IGDefense(robust_cnn, zoo.rankings("smallcnn-robust"), seed=0).eval()
    settings = AttackSettings(n_iter=10, square_queries=100, eot_iter=2)
    checks = run_sanity_checks(defended, test_batch[0][::6], test_batch[1][::6], settings=settings,
                               base_model=robust_cnn)
    assert [c.name for c in checks][-3:] == ["white-box vs transfer", "EOT white-box vs transfer",
                                            "BPDA white-box vs transfer"]
    assert checks[0].passed  # the defense's gradients are finite and non-zero


def test_spread_sample_reaches_every_class(test_batch):
    x, y = test_batch  # 3 per class, ordered by class
    xs, ys = spread_sample([(x[:12], y[:12]), (x[12:], y[12:])], 10)
    assert ys.tolist() == list(range(10))
    assert torch.equal(xs[0], x[0]) and torch.equal(xs[-1], x[-1])


def test_checks_of_a_randomized_defense_start_from_a_fixed_noise_state(robust_cnn, test_batch):
    """Not from wherever the evaluation left the noise stream: a rerun, whose steps are all read back
    from the logs, must get the checks a fresh run got."""
    from igdefense import IGDefense, zoo
    from igdefense.eval.sanity import check_models

    class Drawn(Exception):
        pass

    defended = IGDefense(robust_cnn, zoo.rankings("smallcnn-robust"), seed=0).eval()
    x, y = test_batch
    draw, first = defended.draw_noise, []

    def record_and_stop(images):
        first.append(draw(images))
        raise Drawn

    for before in (1, 2):
        defended.reseed(before)
        draw(x)  # what ran before the checks
        defended.draw_noise = record_and_stop
        with pytest.raises(Drawn):
            check_models({"ig": defended}, ["ig"], "ig", x, y, AttackSettings())
        del defended.draw_noise
    assert torch.equal(first[0], first[1])


def test_the_checks_show_a_progress_bar_that_ends_at_its_total(robust_cnn, test_batch, capsys):
    """Minutes of attacks after the evaluation: the bar counts each attack run, and its total is right."""
    from igdefense import IGDefense, zoo
    from igdefense.eval.sanity import SANITY_EPS, check_models

    defended = IGDefense(robust_cnn, zoo.rankings("smallcnn-robust"), seed=0).eval()
    settings = AttackSettings(n_iter=5, square_queries=20, eot_iter=2, base_model=robust_cnn)
    check_models({"base": robust_cnn, "ig": defended}, ["ig"], "base", test_batch[0][::10], test_batch[1][::10],
                 settings)
    # eps curve: 6 radii x 2 models; on the defense: 10 steps, Square, transfer, EOT, BPDA
    runs = 2 * (len(SANITY_EPS) + 1) + 5
    assert f"{runs}/{runs}" in capsys.readouterr().err.split("\r")[-1]
