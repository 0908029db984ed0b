"""Every zoo model loads offline and classifies real CIFAR-10 test images well above chance."""

import pytest
import torch

import igdefense
from igdefense import zoo
from igdefense.data import cifar10_loader

# Clean accuracy measured on the CIFAR-10 JPEG copy (benchmarks/results/zoo_*.json and
# clean_accuracy_pyautoattack-resnet18.json). On a 100-image sample, 15 points below is three
# standard errors; a broken load scores ~0.10.
MEASURED = {"smallcnn-robust": 0.672, "smallcnn-standard": 0.816, "smallcnn-refined": 0.696,
            "pyautoattack-resnet18": 0.838, "preact-resnet18-robust": 0.7575}


@pytest.fixture(scope="module")
def images():
    return next(iter(cifar10_loader("test", per_class=10, batch_size=100)))


@pytest.mark.parametrize("name", zoo.available())
def test_zoo_model_loads_and_scores_sensibly(name, images):
    model = zoo.load(name)
    assert not any(m.training for m in model.modules())
    x, y = images
    with torch.no_grad():
        logits = model(x)
    assert logits.shape == (100, 10) and torch.isfinite(logits).all()
    accuracy = (logits.argmax(1) == y).float().mean().item()
    assert accuracy >= MEASURED[name] - 0.15, f"{name}: {accuracy:.2f} on 100 test images"


def test_zoo_rankings_fit_their_model():
    for name in zoo.with_rankings():
        rankings = zoo.rankings(name)
        defended = igdefense.wrap(zoo.load(name), rankings)  # fails if the rankings were made for other weights
        assert defended.split.num_classes == rankings.num_classes == 10


def test_unknown_model_lists_the_available_ones():
    with pytest.raises(KeyError, match="available"):
        zoo.load("resnet-9000")
    with pytest.raises(KeyError, match="did you mean 'smallcnn-robust'"):
        zoo.load("smallcnn-robst")
