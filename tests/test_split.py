"""The split finds the penultimate layer on the model families users bring."""

import pytest
import torch
import torchvision
from torch import nn

from igdefense import Site, SplitError, find_split


def _check(model, shape, head, neurons, classes=10):
    split = find_split(model.eval(), torch.rand(1, *shape))
    assert split.head == head
    assert split.site == Site(head, "input")
    assert (split.num_neurons, split.num_classes) == (neurons, classes)
    return split


@pytest.mark.parametrize("builder, shape, head, neurons", [
    (lambda: torchvision.models.resnet18(num_classes=10), (3, 64, 64), "fc", 512),
    (lambda: torchvision.models.resnet50(num_classes=10), (3, 64, 64), "fc", 2048),
    (lambda: torchvision.models.wide_resnet50_2(num_classes=10), (3, 64, 64), "fc", 2048),
    (lambda: torchvision.models.vgg11(num_classes=10), (3, 32, 32), "classifier.6", 4096),
    (lambda: torchvision.models.efficientnet_b0(num_classes=10), (3, 64, 64), "classifier.1", 1280),
    (lambda: torchvision.models.mobilenet_v3_small(num_classes=10), (3, 64, 64), "classifier.3", 1024),
    (lambda: torchvision.models.vit_b_16(num_classes=10), (3, 224, 224), "heads.head", 768),
])
def test_torchvision_models(builder, shape, head, neurons):
    split = _check(builder(), shape, head, neurons)
    assert split.fast


def test_squeezenet_conv_head_is_found_but_not_fast():
    # SqueezeNet's classifier is a 1x1 conv followed by ReLU and pooling: maskable, two passes.
    split = find_split(torchvision.models.squeezenet1_1(num_classes=10).eval(), torch.rand(1, 3, 64, 64))
    assert split.head == "classifier.1" and split.num_neurons == 512 and not split.fast


def test_timm_model():
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    _check(model, (3, 32, 32), "fc", 512)


def test_pyautoattack_resnet18(resnet18):
    _check(resnet18, (3, 32, 32), "linear", 512)


def test_through_robustbench_normalizer():
    from igdefense.robustbench_compat import WideResNet, normalize_model

    model = normalize_model(WideResNet(depth=16, widen_factor=2), (0.49, 0.48, 0.45), (0.25, 0.24, 0.26))
    _check(model, (3, 32, 32), "model.fc", 128)


def test_user_sequential_cnn():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    _check(model, (3, 16, 16), "4", 8, classes=5)


def test_explicit_layer_is_the_output_of_that_module():
    model = torchvision.models.resnet18(num_classes=10).eval()
    split = find_split(model, torch.rand(1, 3, 32, 32), layer="layer3")
    assert split.site == Site("layer3", "output") and split.num_neurons == 256 and not split.fast


def test_no_classifier_names_candidates():
    model = nn.Sequential(nn.Conv2d(3, 10, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Softplus())
    with pytest.raises(SplitError, match="layer="):
        find_split(model, torch.rand(1, 3, 8, 8))


def test_unknown_layer_name():
    with pytest.raises(SplitError, match="not run"):
        find_split(torchvision.models.resnet18(num_classes=10).eval(), torch.rand(1, 3, 32, 32), layer="layer9")


class _TwoHeads(nn.Module):  # an ensemble of two classifiers (RobustBench's composite models, distilled ViTs)
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU())
        self.head, self.head_dist = nn.Linear(16, 10), nn.Linear(16, 10)

    def forward(self, x):
        f = self.features(x)
        return (self.head(f) + self.head_dist(f)) / 2


def test_a_model_combining_two_classifiers_is_refused_rather_than_masked_in_one():
    with pytest.raises(SplitError, match=r"2 classifier layers .*'head', 'head_dist'.*layer="):
        find_split(_TwoHeads().eval(), torch.rand(1, 3, 4, 4))
    split = find_split(_TwoHeads().eval(), torch.rand(1, 3, 4, 4), layer="features")  # one site feeds both: fine
    assert split.num_neurons == 16 and not split.fast


class _AdjustedInPlace(nn.Module):  # the head's output changed in place after it: not the model's output
    def __init__(self):
        super().__init__()
        self.features, self.fc = nn.Sequential(nn.Flatten(), nn.Linear(48, 16), nn.ReLU()), nn.Linear(16, 10)
        self.register_buffer("adjustment", torch.arange(10.0))

    def forward(self, x):
        return self.fc(self.features(x)).add_(self.adjustment)


def test_an_in_place_change_after_the_head_is_not_taken_for_the_head_output():
    # the split recorded the head's output by reference and compared it after the in-place add: "fast", and
    # the shared-backbone path computed pass 1 without the adjustment the two-pass path applies
    split = find_split(_AdjustedInPlace().eval(), torch.rand(1, 3, 4, 4))
    assert split.head == "fc" and not split.fast
