"""The command line, run as a user runs it (real zoo model, real CIFAR-10 images, real attacks)."""

import re

from igdefense.cli import main


def test_demo_shows_transfer_and_the_worst_case(capsys):
    assert main(["demo", "--images", "10", "--batch-size", "10"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "clean" in line and "worst case" in line)
    assert "APGD-CE (white-box)" in header and "APGD-CE from the base (transfer)" in header
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.startswith(("undefended", "IG-defended"))}
    assert rows["undefended"][2] == "-"  # the base model has no transfer column: it is its own source
    defended = [float(v[:-1]) for v in rows["IG-defended"]]
    assert len(defended) == 4 and defended[3] <= min(defended[:3])
    assert re.search(r"worst case, IG-defended minus undefended: [+-]\d+\.\d\d points, 95% CI .*n=10\b", out)
    assert "k=13/128" in out  # 10% of the robust SmallCNN's 128 neurons, rounded


def test_bad_input_is_one_clear_line_and_exit_code_2(capsys, tmp_path):
    truncated = tmp_path / "r.safetensors"
    truncated.write_bytes(b"not a rankings file")
    assert main(["export", "--rankings", str(truncated), "-o", str(tmp_path / "d.onnx")]) == 2
    err = capsys.readouterr().err
    assert "is not a readable rankings file" in err and "Traceback" not in err
    assert not (tmp_path / "d.onnx").exists()
    assert main(["demo", "--k", "0"]) == 2
    assert "k=0 must be between 1 and the number of neurons (128)" in capsys.readouterr().err


def test_rank_and_eval_a_robustbench_model_offline(capsys, tmp_path):
    # RobustBench's ResNet-18 with pyautoattack's shipped CIFAR-10 weights, in RobustBench's offline layout
    import json
    from pathlib import Path

    import pyautoattack.examples as ex
    import torch

    name = "Addepalli2021Towards_RN18"
    (tmp_path / "models" / "cifar10" / "Linf").mkdir(parents=True)
    state = torch.load(Path(list(ex.__path__)[0]) / "model_test.pt", map_location="cpu", weights_only=True)
    torch.save({"state_dict": state}, tmp_path / "models" / "cifar10" / "Linf" / f"{name}.pt")
    spec = ["--model", f"robustbench:{name}", "--model-dir", str(tmp_path / "models")]
    assert main(["rank", *spec, "--per-class", "5", "-o", str(tmp_path / "r.safetensors")]) == 0
    assert "512 neurons" in capsys.readouterr().out
    assert main(["eval", *spec, "--rankings", str(tmp_path / "r.safetensors"), "--images", "10", "--attacks", "fgsm",
                 "--batch-size", "10", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model"] == f"robustbench:{name}" and report["images_done"] == 10
    assert set(report["per_image"]) == {"base", "lo-ir"}
    assert main(["eval", "--model", "torchvision:resnet18", "--checkpoint", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err
