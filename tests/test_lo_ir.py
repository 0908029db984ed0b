"""LO-IR: the closed form is exactly per-neuron leave-one-out ablation at the penultimate layer."""

import pytest
import torch

import igdefense
from igdefense.data import cifar10_loader
from igdefense._hooks import hooks


def test_closed_form_equals_brute_force_ablation(robust_cnn):
    # Real trained model, real images: 2 per class, all 128 penultimate neurons ablated one by one.
    loader = cifar10_loader("train", per_class=2, batch_size=10)
    closed = igdefense.lo_ir(robust_cnn, loader, mode="closed", progress=False)
    ablated = igdefense.lo_ir(robust_cnn, loader, mode="ablation", neuron_batch=64, progress=False)
    torch.testing.assert_close(closed.importance, ablated.importance, rtol=0, atol=1e-4)
    for k in (5, 13, 50):
        assert torch.equal(closed.top_k(k).sort(1).values, ablated.top_k(k).sort(1).values)


def test_closed_form_on_pretrained_resnet18(resnet18, resnet18_rankings, probe_loader):
    # importance[c, j] = |W[c, j]| * mean over class-c images of |a_j|, computed here by hand.
    feats, labels = [], []
    with hooks([resnet18.linear.register_forward_pre_hook(lambda m, a: feats.append(a[0]))]), torch.no_grad():
        for x, y in probe_loader:
            resnet18(x)
            labels.append(y)
    a, y = torch.cat(feats), torch.cat(labels)
    expected = torch.stack([a[y == c].abs().mean(0) for c in range(10)]) * resnet18.linear.weight.abs()
    torch.testing.assert_close(resnet18_rankings.importance, expected, rtol=1e-5, atol=1e-6)
    assert resnet18_rankings.layer == "linear:input" and resnet18_rankings.method == "lo-ir"


@pytest.mark.parametrize("batches, match", [
    (lambda x, y: [(x, y + 8)], r"probe labels \(batch 0\) range over \[8, 11\] but the model has 10 classes"),
    (lambda x, y: [(x, y), (x, y[:2])], r"probe labels \(batch 1\): 2 labels for 4 images"),
    (lambda x, y: [(x, y), {"x": x, "y": y}], "probe batch 1 is a dict, not \\(images, labels\\)"),
    (lambda x, y: [(x, y, y)], "probe batch 0 is a tuple, not"),
    (lambda x, y: [(x, y), (x[:, :, :16], y)], r"probe batch 1 has images of shape \(3, 16, 32\)"),
])
def test_probe_batches_are_checked(resnet18, batches, match):
    x = torch.rand(4, 3, 32, 32)
    with pytest.raises(ValueError, match=match):
        igdefense.lo_ir(resnet18, batches(x, torch.tensor([0, 1, 2, 3])), progress=False)
    with pytest.raises(ValueError, match="mode must be 'auto', 'closed' or 'ablation'"):
        igdefense.lo_ir(resnet18, [(x, torch.arange(4))], mode="fast", progress=False)


def test_missing_class_is_an_error(resnet18):
    x = torch.rand(4, 3, 32, 32)
    with pytest.raises(ValueError, match="no images of classes"):
        igdefense.lo_ir(resnet18, [(x, torch.tensor([0, 1, 2, 3]))], progress=False)


def test_closed_mode_refuses_a_deep_layer(resnet18, probe_loader):
    with pytest.raises(ValueError, match="mode='ablation'"):
        igdefense.lo_ir(resnet18, probe_loader, layer="layer4", mode="closed", progress=False)
