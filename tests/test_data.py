"""CIFAR-10 from the JPEG copy: found, decoded once, class-balanced subsets; clear error when missing."""

import numpy as np
import pytest

from igdefense.data import CIFAR10, DataNotFoundError, balanced_indices, cifar10_loader


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
    assert balanced_indices([0, 1, 0, 1, 0, 1], 2, offset=1) == [2, 4, 3, 5]
    with pytest.raises(ValueError, match="has only"):
        balanced_indices([0, 1, 0], 2)


def test_missing_data_says_where_it_looked(tmp_path):
    with pytest.raises(DataNotFoundError, match="IGDEFENSE_DATA") as err:
        CIFAR10("test", root=tmp_path / "nowhere")
    assert "nowhere" in str(err.value)
