"""Datasets: CIFAR-10 from the JPEG copy (found, decoded once), CIFAR-100 from a torchvision root, image
folders (ImageNet-val style); class-balanced subsets; clear errors when missing."""

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from igdefense.data import (CIFAR10, DataNotFoundError, balanced_indices, balanced_loader,
                            cifar10_loader, open_dataset)


def test_test_split_shape_and_balance():
    ds = CIFAR10("test")
    assert len(ds) == 10_000
    assert np.bincount(ds.labels).tolist() == [1000] * 10
    x, y = ds.__getitems__([0, 9_999, 5])
    assert x.shape == (3, 3, 32, 32) and x.min() >= 0 and x.max() <= 1
    assert y.tolist() == [0, 9, 0]


def test_balanced_loader_takes_the_first_images_of_each_class():
    loader = cifar10_loader("test", per_class=3, batch_size=7)
    labels = np.concatenate([y.numpy() for _, y in loader])
    assert labels.tolist() == sorted([c for c in range(10) for _ in range(3)])
    assert balanced_indices([0, 1, 0, 1, 0, 1], per_class=2, offset=1).tolist() == [2, 4, 3, 5]
    assert balanced_indices([0, 1, 0], per_class=2).tolist() == [0, 2, 1]  # a short class gives what it has


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(DataNotFoundError, match="IGDEFENSE_DATA") as err:
        CIFAR10("test", root=tmp_path / "nowhere")
    assert "nowhere" in str(err.value)


def _foolbox_files(prefix: str) -> list[Path]:
    import foolbox

    return sorted((Path(foolbox.__file__).parent / "data").glob(prefix + "_*"))


def _label(path: Path) -> int:
    return int(path.stem.split("_")[-1])


def test_cifar100_from_a_torchvision_root(tmp_path, cifar100_root):
    root = cifar100_root
    files = _foolbox_files("cifar100")
    for spec in (root, f"cifar100:{root}"):
        ds = open_dataset(spec, "test")
        x, y = ds.__getitems__(list(range(20)))
        expected = torch.stack([torch.from_numpy(np.array(Image.open(f).convert("RGB"))) for f in files])
        assert torch.equal((x * 255).round().byte(), expected.permute(0, 3, 1, 2))
        assert y.tolist() == [_label(f) for f in files] and len(ds.classes) == 100
    assert np.bincount(open_dataset(root, "train").labels).tolist() == [1] * 100
    with pytest.raises(DataNotFoundError, match="cifar-100-python"):
        open_dataset(f"cifar100:{tmp_path / 'nowhere'}")


def test_an_imagenet_style_folder_gets_imagenet_labels_and_centre_crops(tmp_path, imagenet_folder):
    files = _foolbox_files("imagenet")
    truth = sorted(_label(f) for f in files)
    for naming in ("wnid", "number"):
        ds = open_dataset(imagenet_folder(tmp_path / naming, naming), "test", image_size=96)
        x, y = next(iter(balanced_loader(ds, 20, batch_size=20)))
        assert x.shape == (20, 3, 96, 96) and 0 <= x.min() and x.max() <= 1
        assert sorted(y.tolist()) == truth
    assert open_dataset(tmp_path / "wnid").classes[243] == "bull mastiff"
    other = open_dataset(imagenet_folder(tmp_path / "name", "name"))  # torchvision's numbering: sorted folders
    assert other.classes[0] == "c0022" and other.labels.max() == 18
    (tmp_path / "split" / "val").mkdir(parents=True)
    shutil.copytree(tmp_path / "wnid", tmp_path / "split" / "val", dirs_exist_ok=True)
    assert len(open_dataset(tmp_path / "split", "test")) == 20
    with pytest.raises(DataNotFoundError, match="cifar100:ROOT"):
        open_dataset(tmp_path / "split" / "nothing")


def test_balanced_subsets_of_any_size():
    labels = np.array([2, 0, 0, 1, 0, 2, 1, 0])
    assert balanced_indices(labels, 5).tolist() == [1, 2, 3, 6, 0]  # two of 0 and 1, one of 2, class order
    assert balanced_indices(labels, per_class=3).tolist() == [1, 2, 4, 3, 6, 0, 5]  # class 0 has four: three
    cifar = CIFAR10("test").labels
    assert balanced_indices(cifar, 30).tolist() == balanced_indices(cifar, per_class=3).tolist()
    with pytest.raises(ValueError, match="the dataset has 8"):
        balanced_indices(labels, 9)
    ds = CIFAR10("test")
    balanced_loader(ds, per_class=2)
    assert np.bincount(ds.labels[ds.indices]).tolist() == [2] * 10


def test_round_robin_order_makes_a_smaller_selection_the_start_of_a_larger_one():
    labels = np.array([2, 0, 0, 1, 0, 2, 1, 0])
    assert balanced_indices(labels, 5, order="round-robin").tolist() == [1, 3, 0, 2, 6]  # the first of each, ...
    cifar = CIFAR10("test").labels
    small, large = (balanced_indices(cifar, n, order="round-robin") for n in (500, 1000))
    assert large[:500].tolist() == small.tolist()  # so a log of 500 images extends by batch to 1,000
    assert sorted(small.tolist()) == sorted(balanced_indices(cifar, 500).tolist())  # the same images as by class
    assert np.bincount(cifar[small[:100]]).tolist() == [10] * 10  # each batch of 100 is itself balanced
    with pytest.raises(ValueError, match="expected one of class, round-robin"):
        balanced_indices(labels, 5, order="shuffled")


def test_the_same_bytes_laid_anew_are_the_same_source_and_one_changed_byte_is_not(tmp_path, imagenet_folder):
    # A shared data folder is copied anew each session (new path, new times): logs and checkpoints
    # made from it must resume; bound to the path or mtime they were refused (a paper-scale training
    # run stopped at epoch 5 this way).
    from igdefense._identity import file_identity
    from igdefense.data import locate_cifar10

    _, tarball = locate_cifar10(None)
    copy = tmp_path / "laid-anew" / "cifar10.tar.gz"
    copy.parent.mkdir()
    shutil.copyfile(tarball, copy)
    os.utime(copy, ns=(1, 1))
    assert CIFAR10("test", root=copy).identity() == CIFAR10("test").identity()

    changed = tmp_path / "changed.bin"
    changed.write_bytes(b"\0" * 100)
    before = file_identity(changed)
    changed.write_bytes(b"\0" * 99 + b"\1")
    os.utime(changed, ns=(1, 1))
    assert file_identity(changed) != before and file_identity(changed)["size"] == before["size"]

    folder = imagenet_folder(tmp_path / "val")
    moved = shutil.copytree(folder, tmp_path / "elsewhere")
    assert file_identity(moved) == file_identity(folder)
    first = sorted(p for p in Path(moved).rglob("*") if p.is_file())[0]
    first.write_bytes(first.read_bytes()[:-1] + bytes([first.read_bytes()[-1] ^ 1]))
    assert file_identity(moved) != file_identity(folder)


def test_an_offset_leaves_out_the_images_a_sweep_chose_its_setting_on():
    from igdefense.specs import DataSpec

    sweep = set(DataSpec().loader("test", 500)[1].indices.tolist())  # a sweep's 500: the first 50 per class
    _, held_out = DataSpec(offset=50).loader("test", 500)
    assert not sweep & set(held_out.indices.tolist())
    assert np.bincount(held_out.labels[held_out.indices]).tolist() == [50] * 10
    with pytest.raises(ValueError, match="offset"):
        DataSpec.from_json({"offset": -1})
