"""Attacks by name: real pyautoattack attacks and our RayS, on real trained models."""

import math

import pytest
import torch

import igdefense
from igdefense.attacks import ATTACKS, AttackSettings, check_in_ball, register_attack, run_attack
from igdefense.attacks.apgd import cw_loss as _cw_loss
from igdefense.attacks import RayS, registry


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


def _rays_one_image(model, x, y, eps, queries, tol=1e-3, lin_steps=10):
    """RayS written plainly for one image (Chen & Gu 2020, Algorithm 1): (distance, queries used)."""
    dim, norm = x.numel(), math.sqrt(x.numel())
    sgn, best, used, level, block = torch.ones_like(x), math.inf, 0, 0, 0

    def fooled(point):
        nonlocal used
        used += 1
        return model(point.clamp(0, 1)[None]).argmax(1).item() != y

    while used < queries and not best / norm <= eps:
        size = math.ceil(dim / 2 ** level)
        start, end = block * size, min(dim, (block + 1) * size)
        v = sgn.clone().flatten()
        v[start:end] *= -1
        v = v.view_as(x)
        lo, hi, ok = 0.0, best, False
        if math.isfinite(best):
            ok = fooled(x + torch.tensor(hi) * (v / norm))
        else:
            for step in range(1, lin_steps + 1):
                if fooled(x + float(step) * v):
                    ok, hi = True, (torch.tensor(float(step)) * norm).item()
                    break
        while ok:
            mid = (torch.tensor(lo) + torch.tensor(hi)).item() / 2
            if fooled(x + torch.tensor(mid) * (v / norm)):
                hi = mid
            else:
                lo = mid
            if not hi - lo > tol:
                break
        if ok and hi < best:
            best, sgn = hi, v
        block += 1
        if block == 2 ** level or end == dim:
            level, block = (0 if size == 1 else level + 1), 0
    return best / norm, used


def test_rays_on_a_batch_is_rays_on_each_image(robust_cnn, test_batch):
    """On a deterministic model the batched attack makes, for each image, the queries of the algorithm
    run on that image alone (the same distances and query counts)."""
    def model(z):  # one image at a time: the logits do not depend on the batch, to the last bit
        return torch.cat([robust_cnn(image[None]) for image in z])

    x, y = test_batch[0][::3], test_batch[1][::3]  # 10 images, one per class: some fall early, some never
    rays = RayS(model, eps=8 / 255, queries=300, progress=False)
    rays.perturb(x, y)
    for i in range(len(x)):
        distance, used = _rays_one_image(model, x[i], y[i].item(), 8 / 255, 300)
        assert (used, distance) == (rays.used[i].item(), pytest.approx(rays.distance[i].item(), rel=1e-6)), i
    assert 0 < (rays.distance <= 8 / 255).sum() < len(x)  # both kinds of image were in the batch


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


@pytest.fixture(scope="module")
def defended_standard(standard_cnn, probe_loader):
    return igdefense.wrap(standard_cnn, igdefense.lo_ir(standard_cnn, probe_loader, progress=False), seed=0)


@pytest.mark.parametrize("name", ATTACKS)
def test_every_attack_runs_and_fools_the_defended_standard_model(name, defended_standard, standard_cnn, test_batch):
    # Tiny budgets (AutoAttack's own too): each attack must still break a normally trained model.
    x, y = test_batch[0][::5], test_batch[1][::5]
    settings = AttackSettings(n_iter=5, eot_iter=2, square_queries=50, rays_queries=100, adaptive_steps=5,
                              adaptive_eot=2, base_model=standard_cnn)
    defended_standard.reseed(0)
    with torch.no_grad():
        correct = defended_standard(x).argmax(1) == y
    candidates = run_attack(name, defended_standard, x, y, settings)
    assert candidates and correct.any()
    fooled = torch.zeros_like(correct)
    for adv in candidates:
        assert adv.shape == x.shape and adv.dtype == x.dtype
        assert (adv - x).abs().amax() <= settings.eps + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        with torch.no_grad():
            fooled |= defended_standard(adv).argmax(1) != y
    assert (fooled & correct).any()


def _forward_calls(model, run) -> int:
    """How many times ``run()`` calls ``model``."""
    calls = []
    handle = model.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        run()
    finally:
        handle.remove()
    return len(calls)


def test_autoattack_budgets_follow_the_settings(robust_cnn, test_batch):
    x, y = test_batch[0][:4], test_batch[1][:4]
    calls = {steps: _forward_calls(robust_cnn, lambda: run_attack(
        "autoattack", robust_cnn, x, y, AttackSettings(n_iter=steps, square_queries=5 * steps))) for steps in (2, 8)}
    assert calls[8] > 2 * calls[2]  # APGD, APGD-T, FAB-T and Square all took the smaller budget


def test_autoattack_rand_on_a_deterministic_model_takes_one_gradient_where_eot_would_average_identical_ones(
        robust_cnn, test_batch):
    from pyautoattack import AutoAttack

    from igdefense.attacks.apgd import _set_steps

    x, y = test_batch[0][:6], test_batch[1][:6]
    settings = AttackSettings(n_iter=4, eot_iter=20)
    reference = AutoAttack(robust_cnn, eps=settings.eps, norm="Linf", version="rand", seed=settings.seed)
    _set_steps(reference.apgd, 4)
    reference.apgd.eot_iter = 20  # (AutoAttack's own: twenty identical gradients averaged per step)
    expected = reference.run_standard_evaluation(x, y, batch_size=len(x))[0]
    calls = _forward_calls(robust_cnn, lambda: run_attack("autoattack-rand", robust_cnn, x, y, settings))
    assert torch.equal(run_attack("autoattack-rand", robust_cnn, x, y, settings)[0], expected)
    one = _forward_calls(robust_cnn, lambda: run_attack("autoattack-rand", robust_cnn, x, y,
                                                         AttackSettings(n_iter=4, eot_iter=1)))
    assert calls == one


def test_eot_averages_over_noise_draws_and_breaks_images(robust_cnn, test_batch):
    defended = igdefense.wrap(robust_cnn, igdefense.zoo.rankings("smallcnn-robust"), seed=0)
    x, y = test_batch[0][:10], test_batch[1][:10]
    calls = {eot: _forward_calls(defended, lambda: run_attack(
        "apgd-ce-eot", defended, x, y, AttackSettings(n_iter=10, eot_iter=eot))) for eot in (1, 3)}
    assert calls[3] >= 2.5 * calls[1]  # three forward/backward passes per step instead of one
    result = igdefense.evaluate(defended, (x, y), attacks=["apgd-ce-eot"],
                                settings=AttackSettings(eot_iter=2, n_iter=10, draws=3), progress=False)
    assert result.robust_accuracy["apgd-ce-eot"] < result.clean_accuracy  # the robust model still loses images


def test_apgd_on_a_randomized_defense_attacks_every_image(robust_cnn, test_batch):
    # perturb() skips an image one noisy forward gets wrong and hands back the clean image; scoring over
    # draws would then score the clean image as this attack's example
    defended = igdefense.wrap(robust_cnn, igdefense.zoo.rankings("smallcnn-robust"), seed=0)
    x, y = test_batch[0][:20], test_batch[1][:20]
    with torch.no_grad():
        assert (defended(x).argmax(1) != y).any()  # images perturb() would have left alone
    candidates = run_attack("apgd-ce-eot", defended, x, y, AttackSettings(n_iter=5, eot_iter=2))
    assert len(candidates) == 2  # the step a draw got wrong, the highest-loss step
    for c in candidates:
        moved = (c - x).flatten(1).abs().amax(1)
        assert (moved > 0).all() and (moved <= 8 / 255 + 1e-6).all()


@pytest.mark.parametrize("name, each", [("apgd-t", 6), ("square", 1)])
def test_apgd_t_and_square_attack_every_image_of_a_randomized_defense(name, each, robust_cnn, test_batch):
    # perturb() handed back the clean image for 23 of 32 images (APGD-T) and 31 of 32 (Square)
    defended = igdefense.wrap(robust_cnn, igdefense.zoo.rankings("smallcnn-robust"), seed=0)
    x, y = test_batch[0][:20], test_batch[1][:20]
    candidates = run_attack(name, defended, x, y, AttackSettings(n_iter=3, square_queries=20))
    assert len(candidates) == each  # (APGD-T: two per target class)
    for c in candidates:
        moved = (c - x).flatten(1).abs().amax(1)
        assert (moved > 0).all() and (moved <= 8 / 255 + 1e-6).all()


def test_autoattack_takes_its_step_schedule_from_the_steps_it_is_given():
    # pyautoattack sets its step-size checkpoints from n_iter when an attack is built: setting n_iter
    # after left AutoAttack on the schedule of 100 steps
    from pyautoattack.autopgd_base import APGDAttack

    from igdefense.attacks.apgd import _set_steps

    model = torch.nn.Linear(2, 2)
    for steps in (10, 1000):
        built, changed = APGDAttack(model, n_iter=steps, eps=0.1), APGDAttack(model, n_iter=100, eps=0.1)
        _set_steps(changed, steps)
        keys = ("n_iter", "n_iter_orig", "n_iter_2", "n_iter_min", "size_decr")
        assert [getattr(changed, k) for k in keys] == [getattr(built, k) for k in keys]


def test_bfloat16_crafting_attacks_the_images_only_its_bfloat16_copy_gets_wrong():
    # a model right in float32 by 2^-10 and tied in bfloat16 (argmax: the other class): attacks skip an
    # image the model they attack gets wrong, so crafted in bfloat16 it came back clean, judged right
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 2, bias=False))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[:, 0] = torch.tensor([1.0, 1.0 + 2 ** -10])
        model[1].weight[0, 1] = 1.0  # (a pixel an attack can raise to make class 0 win)
    x, y = torch.zeros(1, 3, 32, 32), torch.tensor([1])
    x[0, 0, 0, 0] = 1.0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert model(x).argmax(1).item() == 0  # (wrong in bfloat16)
    candidate, = run_attack("apgd-ce", model.eval(), x, y, AttackSettings(n_iter=5, precision="bf16"))
    assert model(candidate).argmax(1).item() != y.item()  # crafted again in float32: fooled


def test_a_nan_example_is_no_result():
    x = torch.zeros(1, 3, 2, 2)
    with pytest.raises(RuntimeError, match="not finite"):
        check_in_ball("apgd-ce", torch.full_like(x, float("nan")), x, 8 / 255)


def test_examples_on_a_deterministic_model_are_cached(standard_cnn, robust_cnn, test_batch, tmp_path):
    x, y = test_batch[0][:10], test_batch[1][:10]
    settings = AttackSettings(n_iter=5, cache=tmp_path)
    first, = run_attack("apgd-ce", standard_cnn, x, y, settings)
    assert len(list(tmp_path.glob("apgd-ce-*.safetensors"))) == 1
    again = []
    # loaded, not recomputed: one forward, re-classifying the candidate (the attack makes one per step)
    assert _forward_calls(standard_cnn, lambda: again.extend(run_attack("apgd-ce", standard_cnn, x, y, settings))) == 1
    assert torch.equal(first, again[0])
    run_attack("apgd-ce", robust_cnn, x, y, settings)  # other weights: another entry
    run_attack("apgd-ce", standard_cnn, x[:5], y[:5], settings)  # other images: another entry
    assert len(list(tmp_path.glob("apgd-ce-*.safetensors"))) == 3
    defended = igdefense.wrap(robust_cnn, igdefense.zoo.rankings("smallcnn-robust"), seed=0)
    run_attack("apgd-ce", defended, x, y, settings)  # randomized: never cached
    assert len(list(tmp_path.glob("*.safetensors"))) == 3

    class LogitScale(torch.nn.Module):  # no weights of its own: it once shared its base model's entry
        def __init__(self, model, scale):
            super().__init__()
            self.model, self.scale = model, scale

        def forward(self, x):
            return self.model(x) * self.scale

    scaled, = run_attack("apgd-ce", LogitScale(standard_cnn, 1000.0), x, y, settings)
    run_attack("apgd-ce", LogitScale(standard_cnn, 10.0), x, y, settings)
    assert len(list(tmp_path.glob("*.safetensors"))) == 5
    assert torch.equal(run_attack("apgd-ce", standard_cnn, x, y, settings)[0], first)


def test_fgsm_by_hand_and_pgd_stronger(robust_cnn, test_batch):
    x, y = test_batch
    settings = AttackSettings(eps=8 / 255)
    fgsm, = run_attack("fgsm", robust_cnn, x, y, settings)
    xg = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(torch.nn.functional.cross_entropy(robust_cnn(xg), y), xg)
    torch.testing.assert_close(fgsm, (x + 8 / 255 * grad.sign()).clamp(0, 1))
    pgd, = run_attack("pgd", robust_cnn, x, y, settings)
    with torch.no_grad():
        acc = {name: (robust_cnn(adv).argmax(1) == y).float().mean().item() for name, adv in
               [("fgsm", fgsm), ("pgd", pgd)]}
    assert acc["pgd"] < acc["fgsm"]  # ten steps find more than one


def test_an_attack_of_ones_own_is_one_registration(monkeypatch, standard_cnn, test_batch, tmp_path):
    # as a user adds one: a function, registered with its kind and budgets; the evaluation, its log
    # and the command line's choices then know it, and judge its candidates themselves
    monkeypatch.setattr(registry, "_ATTACKS", dict(registry._ATTACKS))
    x, y = test_batch[0][:20], test_batch[1][:20]

    @register_attack("fgsm-twice", "white-box", budgets=("pgd_steps",))
    def fgsm_twice(model, x, y, s):
        first = run_attack("fgsm", model, x, y, s)[0]
        return [first, run_attack("fgsm", model, first, y, AttackSettings(eps=s.eps / 2))[0].clamp(x - s.eps, x + s.eps)]

    result = igdefense.evaluate(standard_cnn, [(x, y)], attacks=["fgsm", "fgsm-twice"], log_path=tmp_path / "log",
                                progress=False)
    assert "fgsm-twice" in registry.attack_names("white-box")
    assert (result.correct["fgsm-twice"] <= result.correct["clean"]).all()
    with pytest.raises(ValueError, match="registered already"):
        register_attack("fgsm", "white-box")(fgsm_twice)
    with pytest.raises(ValueError, match="not fields of AttackSettings"):
        register_attack("other", "white-box", budgets=("steps",))(fgsm_twice)
