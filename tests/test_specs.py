"""What a command names, one typed object each: JSON round trips, one-line refusals, the tuned
setting every command uses, options made from the fields, --data meaning one thing everywhere."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import igdefense
from igdefense import DataSpec, DefenseSpec, ModelSpec, zoo
from igdefense.cli import build_parser, main, specs


@pytest.mark.parametrize("spec", [ModelSpec("smallcnn-robust", num_classes=10), DataSpec("cifar10:/x", 64),
                                  DefenseSpec(k=13, sigma=8 / 255, n_samples=2, origin="a sweep")])
def test_json_round_trip(spec):
    assert type(spec).from_json(json.loads(json.dumps(spec.to_json()))) == spec


def test_from_json_refuses_unknown_fields_and_wrong_types_in_one_line():
    with pytest.raises(ValueError, match=r"unknown DefenseSpec field\(s\) \['exec'\]"):
        DefenseSpec.from_json({"exec": "x"})
    with pytest.raises(ValueError, match="k='13' is not a int or null"):
        DefenseSpec.from_json({"k": "13"})
    with pytest.raises(ValueError, match="sigma=True is not a float"):
        DefenseSpec.from_json({"sigma": True})


def test_a_truncated_setting_file_is_refused_in_one_line(tmp_path, capsys):
    path = DefenseSpec(sigma=2 / 255).save(tmp_path / "d.json")
    path.write_text(path.read_text()[:20])
    with pytest.raises(ValueError, match="is not a readable defense setting"):
        DefenseSpec.load(path)
    assert main(["demo", "--setting", str(path), "--images", "10"]) == 2
    assert "is not a readable defense setting" in capsys.readouterr().err


def test_a_zoo_models_tuned_setting_is_every_commands_default():
    assert DefenseSpec.for_model("smallcnn-refined").sigma == 8 / 255
    assert DefenseSpec.for_model("smallcnn-robust") == DefenseSpec()  # no tuned setting: the paper's
    paper = DefenseSpec.for_model("preact-resnet18-robust")  # the paper's own k at its scale
    assert (paper.k, paper.sigma, paper.n_samples) == (50, 4 / 255, 1)
    for command in ("demo", "eval", "export", "explain-robustness"):
        args = build_parser().parse_args([command, "--model", "smallcnn-refined"])
        assert specs(args)[2].sigma == 8 / 255, command
        args = build_parser().parse_args([command, "--model", "smallcnn-refined", "--sigma", "2/255", "--k", "5"])
        assert (specs(args)[2].sigma, specs(args)[2].k) == (2 / 255, 5), command  # what is typed goes over it


def test_a_setting_file_is_one_thing_to_pass_to_wrap_and_eval(tmp_path):
    rankings = zoo.rankings("smallcnn-robust")
    rankings.save(tmp_path / "r.safetensors")
    path = DefenseSpec(k=7, sigma=2 / 255, rankings=str(tmp_path / "r.safetensors")).save(tmp_path / "d.json")
    assert json.loads(path.read_text())["rankings"] == "r.safetensors"  # relative: the folder moves as one
    model = zoo.load("smallcnn-robust")
    defended = igdefense.wrap(model, path, seed=0)
    direct = igdefense.IGDefense(model, rankings, k=7, sigma=2 / 255, seed=0).eval()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(defended(x), direct(x))
    args = build_parser().parse_args(["eval", "--setting", str(path), "--tau", "0.5"])
    assert specs(args)[2] == DefenseSpec(k=7, sigma=2 / 255, tau=0.5, rankings=str(tmp_path / "r.safetensors"))


def test_cifar10_only_commands_say_so_when_data_is_other_images(tmp_path, capsys):
    for c in ("cat", "dog"):
        (tmp_path / c).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / c / "a.png")
    for command in (["train", "-o", str(tmp_path / "m.safetensors")], ["corruptions", "--out", str(tmp_path / "c")],
                    ["refine", "--out", str(tmp_path / "f")]):
        assert main([*command, "--data", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert f"igdefense {command[0]} works on CIFAR-10 only" in err and "image folder" in err, err
    assert not (tmp_path / "m.safetensors").exists() and not (tmp_path / "c").exists()


def test_k_as_a_count_or_a_share_one_build_path():
    model = zoo.load("smallcnn-robust")
    rankings = zoo.rankings("smallcnn-robust")  # (128 neurons)
    assert DefenseSpec(share=0.05).build(model, rankings).k == 6 == igdefense.IGDefense(model, rankings, share=0.05).k
    assert DefenseSpec().build(model, rankings).k == 13 and DefenseSpec(k=7).build(model, rankings).k == 7
    with pytest.raises(ValueError, match="give one"):
        DefenseSpec(k=7, share=0.05).build(model, rankings)
    # on the command line the one typed wins over the tuned setting's (smallcnn-refined's names sigma only)
    _, _, spec = specs(build_parser().parse_args(["eval", "--model", "smallcnn-refined", "--share", "0.25"]))
    assert spec.share == 0.25 and spec.k is None and spec.sigma == 8 / 255
    typed = DefenseSpec(k=5, origin="a file")
    assert DefenseSpec.from_json(typed.to_json()) == typed
