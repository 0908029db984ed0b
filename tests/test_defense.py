"""IGDefense: exactness limits, both execution paths, gradients, drop-in behaviour, no leftover hooks."""

import gc

import pytest
import torch

import igdefense
from igdefense import IGDefense
from igdefense.split import head_fingerprint
from igdefense._hooks import hooks


def _no_hooks(model):
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_all_neurons_no_noise_equals_base(resnet18, resnet18_rankings, foolbox_images):
    x, _ = foolbox_images
    defended = IGDefense(resnet18, resnet18_rankings, k=512, sigma=0.0).eval()
    with torch.no_grad():
        torch.testing.assert_close(defended(x), resnet18(x), rtol=0, atol=1e-5)


def test_masking_changes_logits(resnet18, resnet18_rankings, foolbox_images):
    x, _ = foolbox_images
    defended = IGDefense(resnet18, resnet18_rankings, k=50, sigma=0.0).eval()
    with torch.no_grad():
        assert (defended(x) - resnet18(x)).abs().max() > 1e-2


def test_matches_the_formula_written_out(resnet18, resnet18_rankings, foolbox_images):
    # pass 1 on x + noise, soft label, mask = p @ M, pass 2 on clean features: by hand.
    x, _ = foolbox_images[0][:6], None
    noise = torch.randn(1, *x.shape, generator=torch.Generator().manual_seed(1)) * 4 / 255
    defended = IGDefense(resnet18, resnet18_rankings, k=50).eval()
    feats = {}
    with hooks([resnet18.linear.register_forward_pre_hook(lambda m, a: feats.__setitem__("a", a[0]))]), \
            torch.no_grad():
        p = torch.softmax(resnet18(x + noise[0]) / 0.01, dim=1)
        resnet18(x)
    with torch.no_grad():
        expected = resnet18.linear(feats["a"] * (p @ resnet18_rankings.mask(50)))
        got = defended(x, noise=noise)
        mask = defended.mask(x, noise=noise)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mask, p @ resnet18_rankings.mask(50), rtol=1e-5, atol=1e-6)


def test_shared_backbone_equals_two_passes(resnet18, resnet18_rankings, foolbox_images):
    x = foolbox_images[0][:8]
    fast = IGDefense(resnet18, resnet18_rankings, k=50, n_samples=3, shared_backbone=True).eval()
    slow = IGDefense(resnet18, resnet18_rankings, k=50, n_samples=3, shared_backbone=False).eval()
    noise = torch.randn(3, *x.shape) * 4 / 255
    with torch.no_grad():
        torch.testing.assert_close(fast(x, noise=noise), slow(x, noise=noise), rtol=1e-4, atol=1e-4)


def test_on_a_cpu_the_default_shares_the_backbone_for_small_batches_only(resnet18, resnet18_rankings, foolbox_images):
    from igdefense.defense import CPU_SHARED_UP_TO

    first_conv = []  # the batch of each call of the backbone's first layer
    handle = resnet18.conv1.register_forward_hook(lambda m, args, out: first_conv.append(len(args[0])))
    try:
        for n_samples in (1, 3):
            defended = IGDefense(resnet18, resnet18_rankings, k=50, n_samples=n_samples).eval()
            two = IGDefense(resnet18, resnet18_rankings, k=50, n_samples=n_samples, shared_backbone=False).eval()
            small = CPU_SHARED_UP_TO // (n_samples + 1)
            for batch, calls in ((small, [(n_samples + 1) * small]), (small + 1, [n_samples * (small + 1), small + 1])):
                x = foolbox_images[0][:batch]
                noise = torch.randn(n_samples, *x.shape) * 4 / 255
                first_conv.clear()
                with torch.no_grad():
                    got = defended(x, noise=noise)
                assert first_conv == calls, (n_samples, batch)
                with torch.no_grad():
                    torch.testing.assert_close(got, two(x, noise=noise), rtol=1e-4, atol=1e-4)
    finally:
        handle.remove()


def test_seeded_noise_is_reproducible(resnet18, resnet18_rankings, foolbox_images):
    x = foolbox_images[0][:4]
    a = IGDefense(resnet18, resnet18_rankings, k=50, seed=3, tau=1.0).eval()
    b = IGDefense(resnet18, resnet18_rankings, k=50, seed=3, tau=1.0).eval()
    with torch.no_grad():
        first = a(x)
        torch.testing.assert_close(first, b(x))
        assert not torch.equal(first, a(x))  # the stream moves on: noise is redrawn every call
        a.reseed(3)
        torch.testing.assert_close(first, a(x))


def test_gradient_flows_through_both_passes(resnet18, resnet18_rankings, foolbox_images):
    x = foolbox_images[0][:4].clone().requires_grad_(True)
    noise = torch.randn(1, *x.shape) * 4 / 255
    defended = IGDefense(resnet18, resnet18_rankings, k=50, tau=1.0).eval()
    g_full, = torch.autograd.grad(defended(x, noise=noise).logsumexp(1).sum(), x)
    assert torch.isfinite(g_full).all() and g_full.abs().sum() > 0
    # Same computation with the pseudo-label detached: the gradient must differ (pass 1 contributes).
    p = torch.softmax(resnet18(x + noise[0]) / 1.0, 1).detach()
    with hooks([resnet18.linear.register_forward_pre_hook(lambda m, a: (a[0] * (p @ defended.class_masks),))]):
        g_detached, = torch.autograd.grad(resnet18(x).logsumexp(1).sum(), x)
    assert (g_full - g_detached).abs().max() > 1e-6 * g_full.abs().max()


def test_smooth_gradients_keep_the_forward_and_use_the_surrogate(resnet18, resnet18_rankings, foolbox_images):
    x = foolbox_images[0][:4].clone().requires_grad_(True)
    noise = torch.randn(1, *x.shape) * 4 / 255
    defended = IGDefense(resnet18, resnet18_rankings, k=50, tau=0.01).eval()
    with defended.smooth_gradients(tau=1.0):  # the view apgd-ce-bpda attacks
        logits = defended(x, noise=noise)
        g_bpda, = torch.autograd.grad(logits.logsumexp(1).sum(), x)
    torch.testing.assert_close(logits, defended(x, noise=noise))  # forward unchanged
    assert defended._gradient_tau is None  # left when the block ends
    # written out: the pseudo-label's value at tau = 0.01, its gradient from tau = 1
    z = resnet18(x + noise[0])
    soft = torch.softmax(z, 1)
    p = soft + (torch.softmax(z / 0.01, 1) - soft).detach()
    with hooks([resnet18.linear.register_forward_pre_hook(lambda m, a: (a[0] * (p @ defended.class_masks),))]):
        g_ref, = torch.autograd.grad(resnet18(x).logsumexp(1).sum(), x)
    torch.testing.assert_close(g_bpda, g_ref)


def test_drop_in_module_behaviour(resnet18, resnet18_rankings, foolbox_images):
    x, y = foolbox_images
    defended = igdefense.wrap(resnet18, resnet18_rankings, k=50, seed=0)
    assert not defended.training
    state = defended.state_dict()
    assert "class_masks" in state and "model.linear.weight" in state
    assert state["class_masks"].sum().item() == 10 * 50
    defended.load_state_dict(state)
    with torch.no_grad():
        out = defended.to(torch.float32)(x)
    assert out.shape == (20, 10)
    assert (out.argmax(1) == y).float().mean() >= 0.9  # 20/20 undefended


def test_no_hook_left_behind(resnet18, resnet18_rankings, foolbox_images):
    x = foolbox_images[0][:2]
    defended = IGDefense(resnet18, resnet18_rankings, k=50, shared_backbone=True)
    assert _no_hooks(resnet18)  # construction (the split probe) leaves nothing
    defended(x)
    assert _no_hooks(resnet18)  # nor does a forward
    with pytest.raises(ValueError):
        defended(torch.rand(2, 3, 4, 4))  # fails inside the backbone, with the hook in place
    assert _no_hooks(resnet18)
    slow = IGDefense(resnet18, resnet18_rankings, k=50, shared_backbone=False)
    with pytest.raises(ValueError):
        slow(torch.rand(2, 3, 4, 4))
    assert _no_hooks(resnet18)
    del defended, slow
    gc.collect()
    assert _no_hooks(resnet18)


def test_explicit_layer_two_pass_path(resnet18, foolbox_images):
    rankings = igdefense.Rankings(torch.rand(10, 512), method="random", layer="layer4:output",
                                  head_fingerprint=head_fingerprint(resnet18, "linear"), input_shape=(3, 32, 32))
    x = foolbox_images[0][:4]
    with torch.no_grad():
        keep_all = IGDefense(resnet18, rankings, k=512, sigma=0.0)
        assert not keep_all.split.fast
        torch.testing.assert_close(keep_all(x), resnet18(x))
        # k=1 keeps one channel of layer4 per class: the prediction must move.
        assert (IGDefense(resnet18, rankings, k=1, sigma=0.0)(x) - resnet18(x)).abs().max() > 1e-2


@pytest.mark.parametrize("shared_backbone", [False, True], ids=["two passes", "shared backbone"])
def test_works_under_torch_compile(robust_cnn, shared_backbone, foolbox_images):
    from igdefense import zoo

    # aot_eager: dynamo's capture and AOT autograd, which the hooks must survive, without the C++
    # compile of the inductor backend (its speed is in benchmarks/overhead.py --compile)
    defended = IGDefense(robust_cnn, zoo.rankings("smallcnn-robust"), shared_backbone=shared_backbone).eval()
    compiled = torch.compile(defended, backend="aot_eager")
    x = foolbox_images[0][:4].clone().requires_grad_()
    noise = torch.randn(1, *x.shape) * defended.sigma
    torch._dynamo.reset()
    got = compiled(x, noise=noise)
    grad, = torch.autograd.grad(got.sum(), x)
    want = defended(x, noise=noise)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(grad, torch.autograd.grad(want.sum(), x)[0])
    assert _no_hooks(robust_cnn)


def test_batch_norm_on_batch_statistics_never_shares_the_backbone(foolbox_images):
    # BN without running statistics (test-time adaptation) normalises by the batch even in eval mode: a
    # shared [noisy; clean] pass would mix pass 1's noisy images into the clean ones' statistics
    from igdefense import zoo

    model = zoo.load("smallcnn-robust")
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.track_running_stats, m.running_mean, m.running_var, m.num_batches_tracked = False, None, None, None
    x = foolbox_images[0][:4]
    asked = IGDefense(model, zoo.rankings("smallcnn-robust"), shared_backbone=True, seed=0).eval()
    two = IGDefense(model, zoo.rankings("smallcnn-robust"), shared_backbone=False, seed=0).eval()
    assert not asked._shares(x.device, len(x))
    noise = asked.draw_noise(x)
    with torch.no_grad():
        assert torch.equal(asked(x, noise), two(x, noise))
        assert not torch.allclose(asked.defend(x, noise), asked._forward_shared_backbone(x + noise[0], x))
