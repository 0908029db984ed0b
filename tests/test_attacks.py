"""Attacks by name: real pyautoattack attacks and our RayS, on real trained models."""

import pytest
import torch

import igdefense
from igdefense.attacks import AttackSettings, _cw_loss, run_attack
from igdefense.rays import RayS


def test_cw_loss_by_hand():
    logits = torch.tensor([[3.0, 1.0, 2.5], [0.0, 4.0, 1.0]])
    torch.testing.assert_close(_cw_loss(logits, torch.tensor([0, 2])), torch.tensor([-0.5, 3.0]))


def test_rays_finds_small_perturbations_on_a_standard_model(standard_cnn, test_batch):
    x, y = test_batch[0][:10], test_batch[1][:10]
    rays = RayS(standard_cnn, eps=8 / 255, queries=500)
    adv = rays.perturb(x, y)
    with torch.no_grad():
        fooled = standard_cnn(adv).argmax(1) != y
    reported = rays.distance <= 8 / 255
    assert torch.equal(fooled, reported)  # what RayS claims is what the model does
    assert (adv - x).abs().amax() <= 8 / 255 + 1e-6
    assert fooled.float().mean() >= 0.5  # a standard model falls to a decision-based attack
    assert (rays.used <= 500 + 40).all()  # budget (plus at most one bisection's overshoot)


@pytest.mark.parametrize("name, at_most", [("apgd-ce", 0.2), ("apgd-dlr", 0.2), ("square", 0.4)])
def test_attacks_break_the_standard_model(name, at_most, standard_cnn, test_batch):
    # Small budgets to stay fast: 20 APGD steps, 300 Square queries (hence Square's looser bound).
    x, y = test_batch
    settings = AttackSettings(n_iter=20, square_queries=300)
    adv, = run_attack(name, standard_cnn, x, y, settings)
    with torch.no_grad():
        acc = (standard_cnn(adv).argmax(1) == y).float().mean().item()
    assert (adv - x).abs().amax() <= 8 / 255 + 1e-6
    assert acc <= at_most


def test_transfer_needs_a_base_model(standard_cnn, test_batch):
    with pytest.raises(ValueError, match="base_model"):
        run_attack("transfer", standard_cnn, *test_batch, AttackSettings())


def test_bpda_needs_an_igdefense(standard_cnn, test_batch):
    with pytest.raises(ValueError, match="IGDefense"):
        run_attack("apgd-ce-bpda", standard_cnn, *test_batch, AttackSettings())


def test_eot_attack_on_the_defended_model(robust_cnn, test_batch):
    rankings = igdefense.zoo.rankings("smallcnn-robust")
    defended = igdefense.wrap(robust_cnn, rankings, seed=0)
    x, y = test_batch[0][:10], test_batch[1][:10]
    result = igdefense.evaluate(defended, (x, y), attacks=["apgd-ce-eot"], eot_iter=2, progress=False)
    assert result.robust_accuracy["apgd-ce-eot"] <= result.clean_accuracy


def test_examples_on_a_deterministic_model_are_cached(standard_cnn, robust_cnn, test_batch, tmp_path):
    x, y = test_batch[0][:10], test_batch[1][:10]
    settings = AttackSettings(n_iter=5, cache=tmp_path)
    first, = run_attack("apgd-ce", standard_cnn, x, y, settings)
    assert len(list(tmp_path.glob("apgd-ce-*.pt"))) == 1
    calls = []
    handle = standard_cnn.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        again, = run_attack("apgd-ce", standard_cnn, x, y, settings)
    finally:
        handle.remove()
    assert calls == [] and torch.equal(first, again)  # loaded, not recomputed
    run_attack("apgd-ce", robust_cnn, x, y, settings)  # other weights: another entry
    run_attack("apgd-ce", standard_cnn, x[:5], y[:5], settings)  # other images: another entry
    assert len(list(tmp_path.glob("apgd-ce-*.pt"))) == 3
    defended = igdefense.wrap(robust_cnn, igdefense.zoo.rankings("smallcnn-robust"), seed=0)
    run_attack("apgd-ce", defended, x, y, settings)  # randomized: never cached
    assert len(list(tmp_path.glob("*.pt"))) == 3
