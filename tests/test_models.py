"""load_model: any classifier by one name (zoo, RobustBench offline, torchvision / timm + checkpoint, a file)."""

from pathlib import Path

import pytest
import torch

from igdefense import zoo
from igdefense.models import Normalized, load_model


def _pyautoattack_weights() -> Path:
    import pyautoattack.examples as ex

    return Path(list(ex.__path__)[0]) / "model_test.pt"


def test_robustbench_offline_from_its_model_dir(tmp_path, foolbox_images):
    # RobustBench's ResNet-18 takes pyautoattack's shipped CIFAR-10 weights as they are: a real trained model
    name = "Addepalli2021Towards_RN18"
    (tmp_path / "cifar10" / "Linf").mkdir(parents=True)
    state = torch.load(_pyautoattack_weights(), map_location="cpu", weights_only=True)
    torch.save({"state_dict": state}, tmp_path / "cifar10" / "Linf" / f"{name}.pt")
    model = load_model(f"robustbench:{name}", model_dir=tmp_path)
    x, y = foolbox_images
    with torch.no_grad():
        same = zoo.load("pyautoattack-resnet18")(x)
        torch.testing.assert_close(model(x), same)
        assert (same.argmax(1) == y).float().mean() > 0.8
    with pytest.raises(ValueError, match="did you mean"):
        load_model("robustbench:Addepalli2021Towards_RN19", model_dir=tmp_path)


@pytest.mark.parametrize("library", ["torchvision", "timm"])
def test_checkpoint_with_num_classes_and_normalisation(library, tmp_path, foolbox_images):
    built = load_model(f"{library}:resnet18", checkpoint=_save(library, tmp_path, 10), num_classes=10)
    x = foolbox_images[0][:2]
    assert built(x).shape == (2, 10) and not built.training
    normalized = load_model(f"{library}:resnet18", checkpoint=tmp_path / "w.pt", num_classes=10,
                            normalize=((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))
    assert isinstance(normalized, Normalized)
    with torch.no_grad():
        torch.testing.assert_close(normalized(x), built((x - 0.5) / 0.25))
    with pytest.raises(ValueError, match="pass num_classes=10"):
        load_model(f"{library}:resnet18", checkpoint=tmp_path / "w.pt", num_classes=100)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(f"{library}:resnet18", checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="has no model"):
        load_model(f"{library}:resnet181", checkpoint=tmp_path / "w.pt")


def _save(library: str, tmp_path: Path, num_classes: int) -> Path:
    if library == "torchvision":
        import torchvision

        model = torchvision.models.resnet18(num_classes=num_classes)
    else:
        import timm

        model = timm.create_model("resnet18", pretrained=False, num_classes=num_classes)
    torch.save({"state_dict": model.state_dict()}, tmp_path / "w.pt")
    return tmp_path / "w.pt"


def test_a_factory_in_a_python_file(tmp_path, foolbox_images):
    (tmp_path / "net.py").write_text("from igdefense import zoo\n\n\ndef build():\n"
                                     "    return zoo.load('smallcnn-robust')\n")
    model = load_model(f"{tmp_path / 'net.py'}:build")
    x = foolbox_images[0][:2]
    with torch.no_grad():
        torch.testing.assert_close(model(x), zoo.load("smallcnn-robust")(x))
    with pytest.raises(ValueError, match="has no function 'make'"):
        load_model(f"{tmp_path / 'net.py'}:make")


def test_a_wrong_spec_says_what_is_accepted():
    with pytest.raises(ValueError, match="robustbench:NAME, torchvision:NAME, timm:NAME"):
        load_model("resnet-50")
    with pytest.raises(ValueError, match="checkpoint= is for"):
        load_model("smallcnn-robust", checkpoint="w.pt")
    assert load_model("smallcnn-robust").training is False


def test_a_model_source_of_ones_own_is_one_registration(monkeypatch, tmp_path):
    # as timm's register_model: a prefix and a loader; load_model, ModelSpec and the errors then know it
    from igdefense import ModelSpec, models

    monkeypatch.setattr(models, "_SOURCES", list(models._SOURCES))
    models.register_model_source("mine:NAME", lambda spec: spec.startswith("mine:"))(
        lambda spec: zoo.load(spec.partition(":")[2]))
    model = load_model("mine:smallcnn-robust")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                   zoo.load("smallcnn-robust").state_dict().values()))
    assert not ModelSpec("mine:smallcnn-robust").names_a_file and ModelSpec("m.py:make").names_a_file
    with pytest.raises(ValueError, match="mine:NAME"):
        load_model("nonesuch")
