"""IG-Defense's own adaptive attack, on a model built so that the mask decides the class."""

import pytest
import torch
from torch import nn

from igdefense import IGDefense, Rankings
from igdefense.eval import AttackSettings, evaluate
from igdefense.attacks.adaptive import apgd_maximize
from igdefense.split import find_split, head_fingerprint

SHAPE = (3, 4, 4)


def mask_decides_model(k_scale: float = 1000.0) -> nn.Sequential:
    """Two classes. Neurons a = relu(K s), a' = relu(-K s) with s = mean pixel - 0.5 decide the
    unmasked prediction (pass 1: class 0 iff s > 0); neurons b0, c0 (class 0's important ones) and
    b1, c1 (class 1's) are constant 1. Under class t's mask only b_t, c_t remain, so pass 2 says t
    whatever the image: the defense answers pass 1's class, and its gradients through the saturated
    pseudo-label are exactly zero."""
    d = SHAPE[0] * SHAPE[1] * SHAPE[2]
    features = nn.Linear(d, 6)
    head = nn.Linear(6, 2, bias=False)
    with torch.no_grad():
        features.weight.zero_()
        features.weight[0] = k_scale / d
        features.weight[1] = -k_scale / d
        features.bias.copy_(torch.tensor([-k_scale / 2, k_scale / 2, 1, 1, 1, 1]))
        head.weight.copy_(torch.tensor([[1.0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 1, 0]]))
    return nn.Sequential(nn.Flatten(), features, nn.ReLU(), head).eval()


@pytest.fixture(scope="module")
def defended():
    model = mask_decides_model()
    split = find_split(model, torch.full((1, *SHAPE), 0.5))
    importance = torch.tensor([[0.0, 0, 2, 1, 0, 0], [0, 0, 0, 0, 2, 1]])  # class t keeps b_t, c_t
    rankings = Rankings(importance, method="lo-ir", layer=str(split.site),
                        head_fingerprint=head_fingerprint(model, split.head), input_shape=SHAPE)
    return IGDefense(model, rankings, k=2, sigma=4 / 255, seed=0).eval()


@pytest.fixture(scope="module")
def images():
    """20 images 0.02 from the decision (s = +-0.02, within eps = 8/255 of flipping), labelled by side."""
    y = torch.arange(20) % 2
    x = (0.5 + torch.where(y == 0, 0.02, -0.02)).view(-1, 1, 1, 1).expand(-1, *SHAPE).contiguous()
    x = x + (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.002  # not all alike
    return x, y


def test_the_mask_decides_the_class_and_gradients_through_the_defense_vanish(defended, images):
    x, y = images
    with torch.no_grad():
        assert torch.equal(defended(x).argmax(1), y)  # right on every clean image
        for t in (0, 1):
            assert (defended.masked_logits(x, torch.full_like(y, t)).argmax(1) == t).all()
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(nn.functional.cross_entropy(defended(x), y), x)
    assert grad.abs().max() == 0


def test_the_mask_aware_attack_breaks_what_apgd_ce_eot_cannot(defended, images):
    settings = AttackSettings(eps=8 / 255, n_iter=20, eot_iter=4, adaptive_steps=20, draws=5)
    result = evaluate(defended, images, attacks=["apgd-ce-eot", "adaptive"], settings=settings, progress=False)
    assert result.clean_accuracy == 1.0
    assert result.robust_accuracy["apgd-ce-eot"] == 1.0  # zero gradients: the white-box attack moves nowhere
    assert result.robust_accuracy["adaptive"] == 0.0  # every image: pass 1 flipped, pass 2 under the mask follows
    assert result.worst_case_under("one-draw").sum() == 0


def two_pass_model(k_scale: float = 10000.0) -> nn.Sequential:
    """Two classes; s = mean of the image's first half - 0.5, u = mean of its second half - 0.5. Pass 1
    (every neuron) has logit 0 - logit 1 = K s + 2 - K u / 100: class 0 iff s > 0 near the images. Class
    0's important neurons are constant 1 (pass 2 under its mask says 0 whatever the image); class 1's
    are relu(-K u / 10) (for class 1) and relu(K u / 10) (for class 0): pass 2 under class 1's mask
    says 1 iff u < 0. An image with s, u > 0 falls only to an attack that flips pass 1 *and* lowers
    u, which pass 2's gradient under the target's mask asks for and pass 1's opposes."""
    d = SHAPE[0] * SHAPE[1] * SHAPE[2]
    first, second = torch.arange(d) < d // 2, torch.arange(d) >= d // 2
    features = nn.Linear(d, 8)  # a, a', b0, z0, b1, c1, e, f
    head = nn.Linear(8, 2, bias=False)
    with torch.no_grad():
        features.weight.zero_()
        for row, (mask, sign) in enumerate([(first, 1), (first, -1)]):
            features.weight[row, mask] = sign * k_scale / (d // 2)
        for row, sign in [(4, -1), (5, 1), (6, 1), (7, -1)]:
            features.weight[row, second] = sign * k_scale / 10 / (d // 2)
        features.bias.copy_(torch.tensor([-k_scale / 2, k_scale / 2, 1, 1, k_scale / 20, -k_scale / 20,
                                          -k_scale / 20, k_scale / 20]))
        head.weight.copy_(torch.tensor([[1.0, 0, 1, 1, 0, 1, 0, 1.1], [0, 1, 0, 0, 1, 0, 1.1, 0]]))
    return nn.Sequential(nn.Flatten(), features, nn.ReLU(), head).eval()


def test_the_pass_2_term_breaks_a_defense_whose_masked_pass_reads_the_image(monkeypatch):
    model = two_pass_model()
    split = find_split(model, torch.full((1, *SHAPE), 0.5))
    importance = torch.tensor([[0.0, 0, 2, 1, 0, 0, 0, 0], [0, 0, 0, 0, 2, 1, 0, 0]])
    rankings = Rankings(importance, method="lo-ir", layer=str(split.site),
                        head_fingerprint=head_fingerprint(model, split.head), input_shape=SHAPE)
    defense = IGDefense(model, rankings, k=2, sigma=4 / 255, seed=0).eval()
    jitter = (torch.rand(10, *SHAPE, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.002
    x = torch.full((10, *SHAPE), 0.52) + jitter
    y = torch.zeros(10, dtype=torch.long)  # s, u = +0.02: class 0, 0.02 from both decisions (eps 8/255)
    with torch.no_grad():
        assert (model(x).argmax(1) == 0).all() and (defense(x).argmax(1) == 0).all()
        assert (defense.masked_logits(x, y + 1).argmax(1) == 0).all()  # pass 2 under class 1's mask: not 1 yet
    settings = AttackSettings(eps=8 / 255, adaptive_steps=20, draws=5)
    assert evaluate(defense, (x, y), attacks=["adaptive"], settings=settings,
                    progress=False).robust_accuracy["adaptive"] == 0.0
    # the same attack without its pass-2 terms (masked logits all 0) flips pass 1 only: it breaks nothing
    monkeypatch.setattr(defense, "masked_logits", lambda v, classes: 0 * v.flatten(1)[:, :2])
    assert evaluate(defense, (x, y), attacks=["adaptive"], settings=settings,
                    progress=False).robust_accuracy["adaptive"] == 1.0


def test_a_model_without_its_own_attack_is_refused_and_skipped_by_benchmark(images, tmp_path):
    from igdefense.eval import Plan, benchmark

    plain = mask_decides_model()
    with pytest.raises(ValueError, match="names no adaptive attack of its own"):
        evaluate(plain, images, attacks=["adaptive"], progress=False)
    with pytest.raises(ValueError, match=r"none of the attacks \['adaptive'\] runs on 'plain'"):  # clean as robust
        benchmark({"plain": plain}, [images], Plan(["adaptive"], cascade=True), out=tmp_path, progress=False)
    results = benchmark({"plain": plain}, [images], Plan(["adaptive", "fgsm"], cascade=True), out=tmp_path,
                        progress=False)
    assert list(results["plain"].correct) == ["clean", "fgsm"]


def test_apgd_maximize_stays_in_the_ball_and_finds_the_corner():
    x = torch.full((4, *SHAPE), 0.5)
    target = torch.rand(x.shape, generator=torch.Generator().manual_seed(1))
    best = apgd_maximize(lambda v: -(v - target).abs().flatten(1).sum(1), x, x, 0.03, 30)
    assert (best - x).abs().max() <= 0.03 + 1e-6
    expected = (x + (target - x).clamp(-0.03, 0.03))
    assert (best - expected).abs().max() < 1e-3  # the closest point of the ball to the target
