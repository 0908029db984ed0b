"""Rankings files: round trip, atomic write, corrupt or foreign files fail loudly."""

import copy
import json

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from igdefense import IGDefense, Rankings, RankingsError


def test_round_trip(resnet18_rankings, tmp_path):
    path = tmp_path / "r.safetensors"
    resnet18_rankings.save(path)
    loaded = Rankings.load(path)
    assert torch.equal(loaded.importance, resnet18_rankings.importance)
    for field in ("method", "layer", "head_fingerprint", "input_shape", "class_names", "probe", "version"):
        assert getattr(loaded, field) == getattr(resnet18_rankings, field)
    assert [p.name for p in tmp_path.iterdir()] == ["r.safetensors"]  # no temp file left
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match=r"a folder is where the file goes: '.*folder'"):  # (not the temp name)
        resnet18_rankings.save(tmp_path / "folder")


def test_defense_accepts_a_path(resnet18, resnet18_rankings, tmp_path):
    resnet18_rankings.save(tmp_path / "r.safetensors")
    assert IGDefense(resnet18, tmp_path / "r.safetensors", k=50).k == 50


def test_top_k_and_mask(resnet18_rankings):
    top = resnet18_rankings.top_k(50)
    mask = resnet18_rankings.mask(50)
    assert top.shape == (10, 50) and mask.sum(1).tolist() == [50.0] * 10
    for c in range(10):  # the kept neurons are the most important ones
        assert resnet18_rankings.importance[c, mask[c] == 1].min() >= resnet18_rankings.importance[c, mask[c] == 0].max()


def test_truncated_file(resnet18_rankings, tmp_path):
    path = tmp_path / "r.safetensors"
    resnet18_rankings.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(RankingsError, match="truncated or corrupt"):
        Rankings.load(path)


def test_flipped_bytes_fail_the_checksum(resnet18_rankings, tmp_path):
    path = tmp_path / "r.safetensors"
    resnet18_rankings.save(path)
    data = bytearray(path.read_bytes())
    data[-7] ^= 0xFF  # inside the importance values
    path.write_bytes(bytes(data))
    with pytest.raises(RankingsError, match="checksum"):
        Rankings.load(path)


def test_not_a_rankings_file(tmp_path):
    path = tmp_path / "weights.safetensors"
    save_file({"w": torch.zeros(3)}, str(path))
    with pytest.raises(RankingsError, match="not an igdefense rankings file"):
        Rankings.load(path)
    with pytest.raises(RankingsError, match="does not exist"):
        Rankings.load(tmp_path / "missing.safetensors")
    with pytest.raises(RankingsError, match="is a folder; give the file in it"):
        Rankings.load(tmp_path)


@pytest.mark.parametrize("change, match", [
    (lambda meta: meta.pop("sha256"), "no sha256 of its importance values"),
    (lambda meta: meta.update(extra=1), r"unknown fields \['extra'\]"),
    (lambda meta: meta.update(layer=5), "layer must be a string, got 5"),
    (lambda meta: meta.update(version=None), "version must be a string"),
    (lambda meta: meta.update(version="99.0.0"), r"made by igdefense 99.0.0, newer than this one"),
    (lambda meta: meta.update(input_shape=[3, 32]), r"input_shape must be one image's \(channels, height, width\)"),
    (lambda meta: meta.update(input_shape=[3, -1, 32]), "input_shape must be"),
    (lambda meta: meta.update(input_shape=[3, 100000, 100000]), "input_shape must be"),  # (a probe would not fit)
    (lambda meta: meta.update(class_names="0123456789"), "class_names must be a list of strings"),
])
def test_metadata_that_is_not_what_save_writes_is_refused(resnet18_rankings, tmp_path, change, match):
    from safetensors import safe_open

    from igdefense.rankings.format import _META_KEY

    path = tmp_path / "r.safetensors"
    resnet18_rankings.save(path)
    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()[_META_KEY])
    change(meta)
    save_file({"importance": resnet18_rankings.importance}, str(path), metadata={_META_KEY: json.dumps(meta)})
    with pytest.raises(RankingsError, match=match):
        Rankings.load(path)


def test_rankings_for_another_model(resnet18, resnet18_rankings):
    retrained = copy.deepcopy(resnet18)
    with torch.no_grad():
        retrained.linear.weight.mul_(1.01)
    with pytest.raises(RankingsError, match="fingerprint"):
        IGDefense(retrained, resnet18_rankings)
    other = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 64), nn.ReLU(), nn.Linear(64, 10))
    with pytest.raises(RankingsError, match="no module 'linear'"):
        IGDefense(other, resnet18_rankings)
    other.linear = other.pop(3)  # same head name, but 64 neurons instead of 512
    with pytest.raises(RankingsError, match="64 neurons vs the model's 512|512 neurons vs the model's 64"):
        IGDefense(other, resnet18_rankings)
