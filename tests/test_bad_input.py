"""Bad input gets a clear error."""

import pytest
import torch

from igdefense import IGDefense


@pytest.fixture(scope="module")
def defended(resnet18, resnet18_rankings):
    return IGDefense(resnet18, resnet18_rankings, k=50).eval()


@pytest.mark.parametrize("x, error, match", [
    (torch.rand(3, 32, 32), ValueError, "unsqueeze"),
    (torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8), TypeError, "float"),
    (torch.full((2, 3, 32, 32), float("nan")), ValueError, "NaN"),
    (torch.rand(2, 3, 32, 32) * 255, ValueError, r"x / 255"),
    (torch.rand(2, 3, 32, 32) - 0.5, ValueError, "expects"),
])
def test_bad_images(defended, x, error, match):
    with pytest.raises(error, match=match):
        defended(x)


def test_bad_noise_shape(defended):
    with pytest.raises(ValueError, match="noise must have shape"):
        defended(torch.rand(2, 3, 32, 32), noise=torch.zeros(2, 2, 3, 32, 32))


def test_k_out_of_range(resnet18, resnet18_rankings):
    with pytest.raises(ValueError, match="between 1 and the number of neurons"):
        IGDefense(resnet18, resnet18_rankings, k=513)


def test_bad_hyperparameters(resnet18, resnet18_rankings):
    with pytest.raises(ValueError, match="n_samples"):
        IGDefense(resnet18, resnet18_rankings, n_samples=0)
    with pytest.raises(ValueError, match="tau"):
        IGDefense(resnet18, resnet18_rankings, tau=0)
