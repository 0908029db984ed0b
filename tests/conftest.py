import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # open_clip / timm never wait on a hub here
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def resnet18():
    """pyautoattack's pretrained CIFAR-10 ResNet-18 (real weights, inputs in [0,1])."""
    from igdefense import zoo

    return zoo.load("pyautoattack-resnet18")


@pytest.fixture(scope="session")
def foolbox_images():
    """The 20 lossless CIFAR-10 test images shipped by foolbox, (x [20,3,32,32], y [20])."""
    from igdefense.data import foolbox_cifar10

    return foolbox_cifar10()


@pytest.fixture(scope="session")
def probe_loader():
    """Two training images per class from the CIFAR-10 JPEG copy."""
    from igdefense.data import cifar10_loader

    return cifar10_loader("train", per_class=2, batch_size=20)


@pytest.fixture(scope="session")
def resnet18_rankings(resnet18, probe_loader):
    import igdefense

    return igdefense.lo_ir(resnet18, probe_loader, progress=False)


@pytest.fixture(scope="session")
def standard_cnn():
    """The zoo's normally trained CIFAR-10 SmallCNN (real weights, small and fast)."""
    from igdefense import zoo

    return zoo.load("smallcnn-standard")


@pytest.fixture(scope="session")
def robust_cnn():
    """The zoo's adversarially trained CIFAR-10 SmallCNN."""
    from igdefense import zoo

    return zoo.load("smallcnn-robust")


@pytest.fixture(scope="session")
def test_batch():
    """The first 3 CIFAR-10 (JPEG copy) test images of each class."""
    from igdefense.data import cifar10_loader

    return next(iter(cifar10_loader("test", per_class=3, batch_size=30)))
