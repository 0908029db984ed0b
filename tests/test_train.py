"""igdefense train: the paper-scale PreAct ResNet-18 recipe at a tiny size, its checkpoint, and its
weights file as a model anyone can name (--model FILE.safetensors)."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import igdefense
from igdefense._state import load_state, save_state
from igdefense.models import load_model
from igdefense.zoo.models import PreActResNet18
from igdefense.train import TrainConfig, _augment, load_checkpoint, train
from igdefense.zoo.weights_file import load_weights, save_half


def test_augment_is_the_per_image_crop_and_flip():
    x, ref = torch.rand(32, 3, 32, 32), []
    gen = torch.Generator().manual_seed(3)
    padded = F.pad(x, (4, 4, 4, 4))
    dx, dy = torch.randint(0, 9, (2, 32), generator=gen)
    flip = torch.rand(32, generator=gen) < 0.5
    for i in range(32):  # the recipe's original loop, one image at a time
        crop = padded[i, :, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        ref.append(crop.flip(-1) if flip[i] else crop)
    assert torch.equal(_augment(x, torch.Generator().manual_seed(3)), torch.stack(ref))


def test_preact_resnet18_trains_resumes_and_loads_from_its_file(tmp_path, test_batch, caplog):
    cfg = TrainConfig(arch="preact-resnet18", robust=True, epochs=2, per_class=2, batch_size=10)
    out = tmp_path / "r18.safetensors"
    trained = train(cfg, out, progress=False)
    assert isinstance(trained, PreActResNet18)
    first = load_weights(out).state_dict()
    out.unlink()  # the checkpoint holds both epochs: a rerun resumes at the end and writes the same weights
    with caplog.at_level("INFO"):
        train(cfg, out, progress=False)
    assert "resumed from" in caplog.text
    assert all(torch.equal(first[k], v) for k, v in load_weights(out).state_dict().items())
    # the training time is the whole run's, over its sessions (it was the last session's alone)
    from safetensors import safe_open

    from igdefense._state import load_state

    took = load_state(str(out) + ".ckpt")["seconds"]
    with safe_open(str(out), "pt") as f:
        assert took > 0.5 and float(f.metadata()["train_seconds"]) >= took - 0.5
    model, epoch, config = load_checkpoint(str(out) + ".ckpt")  # (a run under way, as far as it has got)
    assert epoch == 2 and config == cfg and all(torch.equal(first[k], v) for k, v in model.state_dict().items())
    half = tmp_path / "r18-half.safetensors"  # as the zoo ships it: float16 on disk, float32 in use
    save_half(out, half)
    assert half.stat().st_size < 0.55 * out.stat().st_size
    assert all(v.dtype == torch.float32 for v in load_weights(half).state_dict().values() if v.is_floating_point())
    assert all(torch.equal(v.half().float() if v.is_floating_point() else v, load_weights(half).state_dict()[k])
               for k, v in first.items())
    model = load_model(str(out))  # as --model FILE.safetensors
    x, y = test_batch
    rankings = igdefense.lo_ir(model, [(x, y)], progress=False)
    assert rankings.importance.shape == (10, 512)
    assert igdefense.wrap(model, rankings)(x[:4]).shape == (4, 10)
    with pytest.raises(ValueError, match="another run"):
        train(TrainConfig(arch="preact-resnet18", epochs=3, per_class=2, batch_size=10), out, progress=False)


def test_a_weights_file_that_is_not_what_train_writes_is_refused(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"w": torch.zeros(1)}, str(path), metadata={"config": json.dumps({"arch": "os.system"})})
    with pytest.raises(ValueError, match="its metadata does not name a model igdefense builds"):
        load_model(str(path))
    save_file({"w": torch.zeros(1)}, str(path), metadata={"config": json.dumps({"arch": "preact-resnet18"})})
    with pytest.raises(ValueError, match="its tensors do not fit the preact-resnet18 its metadata names"):
        load_model(str(path))
    path.write_bytes(b"hello")
    with pytest.raises(ValueError, match="is not a safetensors file igdefense train wrote"):
        load_model(str(path))


def test_the_paper_scale_script_at_toy_sizes(tmp_path):
    """benchmarks/paper_scale.sh, the GPU run of the paper's scale, runs its commands end to end."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    env = {**os.environ, "SIZE": "tiny", "RESULTS": str(tmp_path / "results"), "WEIGHTS": str(tmp_path / "w"),
           "IGDEFENSE": f"{sys.executable} -m igdefense.cli", "OMP_NUM_THREADS": "1"}
    run = subprocess.run(["bash", "benchmarks/paper_scale.sh"], cwd=root, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "epoch 1/1" in (tmp_path / "results" / "train_preact-resnet18-robust.log").read_text()
    for name in ("eval_preact-resnet18-robust-pgd10", "eval_preact-resnet18-robust", "eval_preact-resnet18-robust-sigma8"):
        report = json.loads((tmp_path / "results" / name / "report.json").read_text())
        assert "preact-resnet18-robust.safetensors" in json.dumps(report), name


def test_the_paper_scale_summary_agrees_with_a_finished_report(tmp_path):
    """benchmarks/paper_scale_summary.py gives a finished cascade's report, and for the same cascade cut
    before its last attack an upper bound of it."""
    import importlib.util
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("paper_scale_summary", root / "benchmarks/paper_scale_summary.py")
    summary = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summary)
    folder = root / "benchmarks/results/eval_smallcnn-refined-sigma8-draws"
    rows = {r["model"]: r for r in json.loads((folder / "report.json").read_text())["summary"]}
    s = summary.summarise(folder)["lo-ir"]
    assert s["finished"] and s["images"] == 1000
    assert s["base"]["worst_case"] == round(rows["base"]["iw_wc"], 2) == 14.9
    for rule, column, wc in [("one-draw", "iw_wc one-draw", 16.3), ("majority", "iw_wc", 16.6),
                             ("every-draw", "iw_wc every-draw", 15.6)]:
        assert s["defended"][rule]["worst_case"] == round(rows["lo-ir"][column], 2) == wc
    assert s["defended"]["majority"]["vs_base"] == rows["lo-ir"]["gains"]["IW-WC"]  # +1.70 [+0.87, +2.52]
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "base.jsonl").write_text((folder / "base.jsonl").read_text())
    lines = (folder / "lo-ir.jsonl").read_text().splitlines()
    (cut / "lo-ir.jsonl").write_text("\n".join(lines[:-1]) + "\n")  # the defended log before its last step
    partial = summary.summarise(cut)["lo-ir"]
    assert not partial["finished"] and partial["defended"]["attacks_to_run"] == ["rays"]
    assert partial["defended"]["majority"]["worst_case"] >= s["defended"]["majority"]["worst_case"]
    with_control = summary.summarise(root / "benchmarks/results/eval_smallcnn-robust-draws")  # every model, each its own
    assert set(with_control) == {"lo-ir", "random-mask"}
    assert with_control["random-mask"]["defended"]["majority"] != with_control["lo-ir"]["defended"]["majority"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A real training run's checkpoint (SmallCNN, one epoch on 10 images)."""
    out = tmp_path_factory.mktemp("train") / "s.safetensors"
    train(TrainConfig(epochs=1, per_class=1, batch_size=10), out, progress=False)
    return Path(str(out) + ".ckpt")


@pytest.mark.parametrize("craft", [
    lambda s: s["identity"]["config"].update(layers=3),  # a field this version has not
    lambda s: s["identity"]["config"].update(widths=5),  # not a list
    lambda s: s["identity"]["config"].update(arch="preact-resnet18"),  # another model's config: shapes differ
    lambda s: s["model"].popitem(),  # a tensor missing
    lambda s: s.update(epoch="two"),
    lambda s: s.update(epoch=-1),
    lambda s: s.pop("identity"),
])
def test_a_crafted_checkpoint_is_refused_in_one_line(tmp_path, checkpoint, craft):
    state = load_state(checkpoint)
    craft(state)
    save_state(tmp_path / "crafted.ckpt", state)
    with pytest.raises(ValueError, match=r"^[^\n]*crafted.ckpt is not a checkpoint igdefense train wrote"):
        load_checkpoint(tmp_path / "crafted.ckpt")


def test_a_truncated_checkpoint_is_refused_in_one_line(tmp_path, checkpoint):
    data = checkpoint.read_bytes()
    (tmp_path / "cut.ckpt").write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match=r"^[^\n]*cut.ckpt is not a readable igdefense state file"):
        load_checkpoint(tmp_path / "cut.ckpt")
