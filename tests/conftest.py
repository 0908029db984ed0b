import os
import pickle
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # open_clip / timm never wait on a hub here
# Under pytest-xdist (-n 2) each worker takes one of the 2 cores; alone, the suite takes both.
torch.set_num_threads(1 if os.environ.get("PYTEST_XDIST_WORKER") else 2)
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # and so does each command a test starts


@pytest.fixture(autouse=True)
def _seeded():
    """Each test starts from the same random state, whichever worker runs it and whatever ran before: a test's
    unseeded draws (noise compared at 1e-4, random weights) are then the same draws on every run."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)


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
def random_clip():
    """open_clip's ViT-S-32 with random weights (no CLIP weights exist offline; CD-IR's mechanics need none)."""
    pytest.importorskip("open_clip")
    from igdefense.rankings.cd_ir import load_clip

    return load_clip("ViT-S-32", pretrained=None)


@pytest.fixture(scope="session")
def test_batch():
    """The first 3 CIFAR-10 (JPEG copy) test images of each class."""
    from igdefense.data import cifar10_loader

    return next(iter(cifar10_loader("test", per_class=3, batch_size=30)))


def _foolbox_files(prefix: str) -> list[Path]:
    import foolbox

    return sorted((Path(foolbox.__file__).parent / "data").glob(prefix + "_*"))


def _label(path: Path) -> int:
    return int(path.stem.split("_")[-1])


@pytest.fixture(scope="session")
def cifar100_root(tmp_path_factory) -> Path:
    """A torchvision-layout CIFAR-100 root holding foolbox's 20 real CIFAR-100 test images. Its train split
    repeats them under all 100 labels, so that a rankings probe sees every class."""
    root = tmp_path_factory.mktemp("cifar100")
    files = _foolbox_files("cifar100")
    pixels = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])  # (20, 32, 32, 3)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)

    def write(name, images, labels):
        with open(folder / name, "wb") as f:
            pickle.dump({"data": images.transpose(0, 3, 1, 2).reshape(len(images), -1),
                         "fine_labels": list(labels)}, f)

    write("test", pixels, [_label(f) for f in files])
    write("train", np.concatenate([pixels] * 5), range(100))
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, f)
    return root


@pytest.fixture(scope="session")
def imagenet_folder():
    """``make(root, naming)``: foolbox's 20 ImageNet validation images sorted into class folders
    (ImageNet-val style), named by WordNet id ("wnid"), class number ("number") or otherwise ("name")."""
    from timm.data import ImageNetInfo

    wnids = ImageNetInfo().label_names()

    def make(root: Path, naming: str = "wnid") -> Path:
        for f in _foolbox_files("imagenet"):
            name = {"wnid": wnids[_label(f)], "number": str(_label(f)), "name": f"c{_label(f):04d}"}[naming]
            (root / name).mkdir(parents=True, exist_ok=True)
            shutil.copy(f, root / name / f.name)
        return root

    return make


def replace_attack_runs(monkeypatch, make_run) -> None:
    """Every registered attack's function replaced by ``make_run(name, original)`` for one test."""
    import dataclasses

    from igdefense.attacks import registry

    for name, attack in list(registry._ATTACKS.items()):
        monkeypatch.setitem(registry._ATTACKS, name, dataclasses.replace(attack, run=make_run(name, attack.run)))
