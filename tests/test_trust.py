"""No state on disk is trusted blindly, no file runs code, every mistake gets one line: each defect class
through the real CLI or API, on real files (crafted pickles whose payload would touch a marker file)."""

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from igdefense import IGDefense, evaluate, zoo
from igdefense.cli import main
from igdefense.eval import AttackSettings

REPO = Path(__file__).resolve().parent.parent


class _TouchMarker:
    """A pickle payload: unpickling it creates ``path`` (what a crafted file would do, harmlessly)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def _crafted(path: Path, marker: Path, wrap=lambda payload: payload) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        pickle.dump(wrap(_TouchMarker(marker)), f)


def _error(capsys) -> str:
    """The one line a refused command prints (progress bars aside), checked to be one line, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("igdefense: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _eval(out, *extra):
    return ["eval", "--images", "20", "--attacks", "fgsm", "--probe-per-class", "2", "--out", str(out), *extra]


# 1. Every resumable or cached state is bound to what produced it -------------------------------------

def test_a_rerun_with_another_model_or_setting_is_refused_and_fresh_starts_over(tmp_path, capsys):
    out = tmp_path / "D"
    assert main(_eval(out)) == 0
    robust = json.loads((out / "report.json").read_text())["summary"]
    capsys.readouterr()
    for extra, named in ((["--model", "smallcnn-standard"], "weights"), (["--sigma", "8/255"], "sigma"),
                         (["--k", "20"], ".k ")):
        assert main(_eval(out, *extra)) == 2
        err = _error(capsys)
        assert named in err and "--fresh" in err, err
    assert json.loads((out / "report.json").read_text())["summary"] == robust  # nothing was overwritten
    assert main(_eval(out, "--model", "smallcnn-standard", "--fresh")) == 0
    assert main(_eval(tmp_path / "new", "--model", "smallcnn-standard")) == 0
    fresh, new = (json.loads((d / "report.json").read_text()) for d in (out, tmp_path / "new"))
    assert fresh["summary"] == new["summary"] != robust
    backup, = out.glob("backup-*")
    assert json.loads((backup / "report.json").read_text())["summary"] == robust  # the old run was kept


def test_a_defenses_identity_names_its_weights_rankings_settings_and_path(robust_cnn, standard_cnn, probe_loader):
    import igdefense

    rankings = zoo.rankings("smallcnn-robust")
    base = IGDefense(robust_cnn, rankings).identity()
    assert base["path"] == "shared backbone up to 16 backbone images, else two passes" and base["device"] == "cpu"
    assert base["k"] == 13
    assert IGDefense(robust_cnn, rankings, shared_backbone=True).identity()["path"] == "shared backbone"
    assert IGDefense(robust_cnn, rankings, shared_backbone=False).identity()["path"] == "two passes"
    assert IGDefense(robust_cnn, rankings, n_samples=16).identity()["path"] == "two passes"
    assert IGDefense(robust_cnn, rankings.randomized(0)).identity()["rankings"] != base["rankings"]
    other = IGDefense(standard_cnn, igdefense.lo_ir(standard_cnn, probe_loader, progress=False)).identity()
    assert other["model"] != base["model"] and other["rankings"] != base["rankings"]
    assert IGDefense(robust_cnn, rankings, seed=5).identity() == base  # (evaluations reseed the noise)


def test_a_third_party_randomized_defense_needs_only_reseed_and_smooth_gradients():
    import contextlib

    from igdefense import RandomizedDefense
    from igdefense._identity import model_identity

    class Noisy(torch.nn.Module):
        def __init__(self, sigma):
            super().__init__()
            self.sigma, self.linear = sigma, torch.nn.Linear(3, 2)

        def reseed(self, seed):
            torch.manual_seed(seed)

        def smooth_gradients(self, tau=1.0):
            return contextlib.nullcontext()

    assert isinstance(Noisy(0.1), RandomizedDefense)  # (identity() is IGDefense's own, not the protocol's)
    torch.manual_seed(0)
    a, b = Noisy(0.1), Noisy(0.2)
    b.load_state_dict(a.state_dict())
    assert model_identity(a)["weights"] == model_identity(b)["weights"] and model_identity(a) != model_identity(b)


def _jpeg_tree(root: Path, flip: bool) -> Path:
    """A CIFAR-10 JPEG tree of the copy's first 2 test and train images per class (mirrored with ``flip``)."""
    from igdefense.data import CIFAR10, CIFAR10_CLASSES

    for split in ("train", "test"):
        data = CIFAR10(split)
        for c, name in enumerate(CIFAR10_CLASSES):
            (root / split / name).mkdir(parents=True)
            for j, i in enumerate(np.flatnonzero(data.labels == c)[:2]):
                pixels = np.asarray(data.images[i])
                Image.fromarray(pixels[:, ::-1] if flip else pixels).save(root / split / name / f"{j:04d}.jpg",
                                                                         quality=95)
    return root


def test_a_second_jpeg_tree_gets_its_own_decoded_images(tmp_path, monkeypatch):
    from igdefense.data import CIFAR10

    a, b = _jpeg_tree(tmp_path / "a", flip=False), _jpeg_tree(tmp_path / "b", flip=True)
    monkeypatch.setenv("IGDEFENSE_CACHE", str(tmp_path / "cache"))  # (the trees' decodes are thrown away)
    xa, _ = CIFAR10("test", a).__getitems__(list(range(20)))
    xb, _ = CIFAR10("test", b).__getitems__(list(range(20)))
    assert (xa - xb.flip(-1)).abs().max() < 0.1 and (xa - xb).abs().mean() > 0.05  # b's own, mirrored images
    assert CIFAR10("test", a).identity() != CIFAR10("test", b).identity()


def test_refine_resumed_with_another_model_or_reference_is_refused(tmp_path):
    from igdefense.data import CIFAR10
    from igdefense.refine import refine

    data = CIFAR10("train", indices=np.r_[0:50000:500])  # 100 images, all classes
    options = dict(rounds=1, attribute_per_round=0, batch_size=32, steps_per_round=1, holdout=20, method="saliency",
                   progress=False)
    refine(zoo.load("smallcnn-standard"), data, reference=zoo.load("smallcnn-robust"), out_dir=tmp_path, **options)
    for model, reference, named in (("smallcnn-robust", "smallcnn-robust", "model"),
                                    ("smallcnn-standard", "smallcnn-refined", "reference")):
        with pytest.raises(ValueError, match=rf"another run: {named} \("):
            refine(zoo.load(model), data, reference=zoo.load(reference), out_dir=tmp_path, **options)
    other = CIFAR10("train", indices=np.r_[1:50000:500])
    with pytest.raises(ValueError, match=r"another run: data\.indices"):
        refine(zoo.load("smallcnn-standard"), other, reference=zoo.load("smallcnn-robust"), out_dir=tmp_path,
               **options)


def test_a_sweep_folder_refuses_another_runs_rankings(tmp_path, capsys):
    out = tmp_path / "s"
    args = ["sweep", "--images", "20", "--shares", "0.1", "--sigmas", "4/255", "--n-samples", "1", "--attacks", "fgsm",
            "--no-random-control", "--adversarial-rankings", "--out", str(out)]
    assert main([*args, "--probe-per-class", "2"]) == 0
    capsys.readouterr()
    assert main([*args, "--probe-per-class", "3"]) == 2
    assert "rankings 'adversarial' of another sweep" in _error(capsys)


def test_the_rankings_cache_is_keyed_by_the_weights_and_a_planted_file_is_recomputed(tmp_path, monkeypatch, caplog):
    from igdefense.rankings import Rankings
    from igdefense.data import CIFAR10
    from igdefense.rankings.cache import cached_lo_ir

    train = CIFAR10("train")  # decoded into the shared cache; the rankings go into the test's own
    monkeypatch.setenv("IGDEFENSE_CACHE", str(tmp_path))
    model = zoo.load("smallcnn-standard")
    first = cached_lo_ir(model, train, 2, name="m")
    path, = (tmp_path / "rankings").glob("m-lo-ir-*.safetensors")
    other = zoo.load("smallcnn-robust")
    assert not torch.equal(cached_lo_ir(other, train, 2, name="m").importance, first.importance)
    planted = first.randomized(1)  # a file put under the key's name, without its made_by
    planted.save(path)
    assert torch.equal(cached_lo_ir(model, train, 2, name="m").importance, first.importance)
    negated = Rankings.load(path)  # its made_by copied, the importance negated, its sha256 recomputed by save
    negated.importance = -negated.importance
    negated.save(path)
    with caplog.at_level("WARNING"):
        assert torch.equal(cached_lo_ir(model, train, 2, name="m").importance, first.importance)
    assert "its seal differs" in caplog.text


def test_corruptions_folder_is_bound_to_its_images(tmp_path, capsys):
    out = tmp_path / "c"
    assert main(["corruptions", "--names", "brightness", "--per-class", "1", "--quiet", "--out", str(out)]) == 0
    assert main(["corruptions", "--names", "brightness", "--per-class", "2", "--quiet", "--out", str(out)]) == 2
    assert "another run" in _error(capsys)


def test_a_corruptions_file_of_another_dtype_or_shape_and_short_labels_are_written_again(tmp_path):
    out = tmp_path / "c"
    assert main(["corruptions", "--names", "brightness,contrast", "--per-class", "1", "--quiet", "--out", str(out)]) == 0
    first = {f: np.load(out / f) for f in ("brightness.npy", "contrast.npy", "labels.npy")}
    np.save(out / "brightness.npy", first["brightness.npy"].astype(np.float32))  # another dtype, the same shape
    np.save(out / "contrast.npy", first["contrast.npy"][:, :16])  # the right count, another shape
    np.save(out / "labels.npy", first["labels.npy"][:-5])  # short
    assert main(["corruptions", "--names", "brightness,contrast", "--per-class", "1", "--quiet", "--out", str(out)]) == 0
    for f, array in first.items():
        again = np.load(out / f)
        assert again.dtype == array.dtype and np.array_equal(again, array), f


# 2. Logs are checked as they are read ----------------------------------------------------------------

@pytest.fixture(scope="module")
def written_log(standard_cnn, test_batch, tmp_path_factory):
    batches = [(test_batch[0][i:i + 10], test_batch[1][i:i + 10]) for i in range(0, 30, 10)]
    log = tmp_path_factory.mktemp("log") / "run.jsonl"
    evaluate(standard_cnn, batches, attacks=["fgsm"], log_path=log, progress=False)
    return batches, log.read_text().splitlines()


@pytest.mark.parametrize("edit, match", [
    (lambda r: {**r, "extra": [1]}, r"run.jsonl:3: unknown step\(s\) \['extra'\]"),
    (lambda r: {**r, "fgsm": r["fgsm"][:-1]}, "run.jsonl:3: its steps have different lengths"),
    (lambda r: {**r, "clean": [2] * len(r["clean"])}, "run.jsonl:3: 'clean' is not a list of 0/1"),
    # a well-formed edit: the next record's digest of its line no longer matches
    (lambda r: {**r, "batch": 7}, "run.jsonl:4: it does not follow the line before it"),
    (lambda r: {**r, "digest": "0" * 32}, "run.jsonl:4: it does not follow the line before it"),
    (lambda r: {**r, "clean": [1] * len(r["clean"])}, "run.jsonl:4: it does not follow the line before it"),
    (lambda r: {k: v for k, v in r.items() if k != "prev"}, "run.jsonl:3: it carries no digest of the line before"),
    (lambda r: None, "run.jsonl:3 is not JSON, and it is not the last line"),
])
def test_an_edited_log_stops_the_run_with_file_and_line(standard_cnn, written_log, tmp_path, edit, match):
    batches, lines = written_log
    record = edit(json.loads(lines[2]))
    lines = [*lines[:2], "{torn" if record is None else json.dumps(record), *lines[3:]]
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=match):
        evaluate(standard_cnn, batches, attacks=["fgsm"], log_path=log, progress=False)
    assert log.read_text() == "\n".join(lines) + "\n"  # nothing finished was thrown away


def test_records_reordered_or_moved_under_another_model_s_header_are_refused(standard_cnn, robust_cnn, written_log,
                                                                             tmp_path):
    batches, lines = written_log
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join([lines[0], lines[1], lines[3], lines[2], *lines[4:]]) + "\n")  # two records swapped
    with pytest.raises(ValueError, match="run.jsonl:3: it does not follow the line before it"):
        evaluate(standard_cnn, batches, attacks=["fgsm"], log_path=log, progress=False)
    theirs = tmp_path / "theirs.jsonl"  # robust_cnn's own log, its body put under standard_cnn's header
    evaluate(robust_cnn, batches, attacks=["fgsm"], log_path=theirs, progress=False)
    log.write_text("\n".join([lines[0], *theirs.read_text().splitlines()[1:]]) + "\n")
    with pytest.raises(ValueError, match="run.jsonl:2: it does not follow the line before it"):
        evaluate(standard_cnn, batches, attacks=["fgsm"], log_path=log, progress=False)


def test_an_edited_last_record_is_caught_by_the_clean_pass_done_again(standard_cnn, written_log, tmp_path):
    batches, lines = written_log
    last = json.loads(lines[-1])  # (nothing follows the last line: the chain cannot see its edit)
    last["clean"] = [1 - b for b in last["clean"]]
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join([*lines[:-1], json.dumps(last)]) + "\n")
    with pytest.raises(ValueError, match=r"batch 2: its clean results differ from this model's on 10 image"):
        evaluate(standard_cnn, batches, attacks=["fgsm"], log_path=log, progress=False)


def test_other_images_under_the_same_log_are_refused(standard_cnn, written_log, tmp_path):
    batches, lines = written_log
    log = tmp_path / "run.jsonl"
    log.write_text("\n".join(lines) + "\n")
    x, y = batches[2]
    with pytest.raises(ValueError, match="batch 2 was computed on other images"):
        evaluate(standard_cnn, [*batches[:2], (x.flip(-1), y)], attacks=["fgsm"], log_path=log, progress=False)


def test_a_committed_log_of_version_0_1_is_refused_with_how_to_redo_it(robust_cnn, test_batch, tmp_path):
    log = tmp_path / "base.jsonl"
    shutil.copy(REPO / "benchmarks/results/eval_smallcnn-robust/base.jsonl", log)
    with pytest.raises(ValueError, match="written by igdefense 0.1.*--fresh"):
        evaluate(robust_cnn, test_batch, attacks=["autoattack", "rays"], cascade=True, log_path=log, progress=False)


# 3. No file runs code unless the user named it as code ------------------------------------------------

def test_a_crafted_cifar100_pickle_is_refused_without_running(tmp_path, cifar100_root):
    from igdefense.data import CIFAR100

    root, marker = tmp_path / "root", tmp_path / "marker"
    shutil.copytree(cifar100_root, root)
    _crafted(root / "cifar-100-python" / "test", marker, lambda p: {"data": p, "fine_labels": [0]})
    with pytest.raises(ValueError, match="pathlib.*refusing to unpickle"):
        CIFAR100("test", root)
    assert not marker.exists()
    assert len(CIFAR100("test", cifar100_root)) == 20  # the real files still load


@pytest.mark.parametrize("where", ["checkpoint", "segments"])
def test_crafted_refine_files_are_never_unpickled(tmp_path, where):
    from igdefense.data import CIFAR10
    from igdefense.refine import refine

    marker, out = tmp_path / "marker", tmp_path / "run"
    target = {"checkpoint": out / "checkpoint.pt", "segments": out / "segments.safetensors"}[where]
    _crafted(target, marker)
    data = CIFAR10("train", indices=np.r_[0:50000:500])
    with pytest.raises(ValueError, match="does not unpickle|not a readable igdefense state file"):
        refine(zoo.load("smallcnn-standard"), data, reference=None, out_dir=out, rounds=1, attribute_per_round=0,
               batch_size=32, steps_per_round=1, holdout=20, method="saliency", progress=False)
    assert not marker.exists()


def test_a_crafted_train_checkpoint_is_never_unpickled(tmp_path, capsys):
    marker = tmp_path / "marker"
    _crafted(tmp_path / "m.safetensors.ckpt", marker)
    assert main(["train", "--epochs", "1", "-o", str(tmp_path / "m.safetensors")]) == 2
    assert "not a readable igdefense state file" in _error(capsys) and not marker.exists()


@pytest.mark.parametrize("content, match", [
    ("crafted", r"is not a file of tensors torch.load reads safely .*refused without running any of its code"),
    ("bytes", r"is not a file of tensors torch.load reads safely"),
    ("list", r"holds a list, not a state dict of named tensors"),
    ("folder", r"is a folder; give the file in it \(a checkpoint"),
])
def test_a_checkpoint_that_is_not_a_state_dict_is_one_line_and_never_unpickled(tmp_path, capsys, content, match):
    marker, path = tmp_path / "marker", tmp_path / "w.pt"
    if content == "crafted":
        _crafted(path, marker)
    elif content == "bytes":
        path.write_bytes(bytes(range(256)))
    elif content == "list":
        torch.save([1, 2], path)
    else:
        path.mkdir()
    assert main(["eval", "--model", "torchvision:resnet18", "--checkpoint", str(path), "--num-classes", "10",
                 "--attacks", "fgsm", "--images", "2", "--out", str(tmp_path / "x")]) == 2
    assert re.search(match, _error(capsys)) and not marker.exists()


def test_a_crafted_robustbench_checkpoint_is_refused_without_torch_s_advice(tmp_path):
    from igdefense.models import load_model

    marker = tmp_path / "marker"
    _crafted(tmp_path / "models/cifar10/Linf/Addepalli2021Towards_RN18.pt", marker)
    with pytest.raises(ValueError, match="refused without running any of its code: delete it") as e, \
            warnings.catch_warnings():
        warnings.filterwarnings("error", message="Detected pickle protocol")  # (torch's, on the crafted file)
        load_model("robustbench:Addepalli2021Towards_RN18", model_dir=tmp_path / "models")
    assert "weights_only" not in str(e.value) and not marker.exists()


def test_a_crafted_attack_cache_file_is_recomputed_not_unpickled(standard_cnn, test_batch, tmp_path):
    from igdefense.attacks.run import _memo_path, run_attack

    x, y = test_batch
    settings = AttackSettings(cache=tmp_path / "cache", pgd_steps=2)
    first = run_attack("bim", standard_cnn, x, y, settings)
    path = _memo_path("bim", standard_cnn, x, y, settings)
    marker = tmp_path / "marker"
    _crafted(path, marker)
    again = run_attack("bim", standard_cnn, x, y, settings)
    assert torch.equal(again[0], first[0]) and not marker.exists()


@pytest.fixture(scope="module")
def exported(robust_cnn, tmp_path_factory):
    from igdefense.export import to_onnx

    path = tmp_path_factory.mktemp("onnx") / "m.onnx"
    to_onnx(IGDefense(robust_cnn, zoo.rankings("smallcnn-robust")).eval(), path,
            metadata={"zoo_model": "smallcnn-robust", "rankings": "zoo", "model_options": "{}"})
    return path


def _with_metadata(src: Path, dst: Path, **meta) -> Path:
    import onnx

    model = onnx.load(str(src))
    for prop in model.metadata_props:
        if prop.key in meta:
            prop.value = meta.pop(prop.key)
    for key, value in meta.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(dst))
    return dst


def test_export_check_never_runs_a_file_its_metadata_names(exported, tmp_path, capsys):
    marker = tmp_path / "marker"
    factory = tmp_path / "evil.py"
    factory.write_text(f"from pathlib import Path\nPath({str(marker)!r}).touch()\ndef make():\n    return None\n")
    onnx_file = _with_metadata(exported, tmp_path / "evil.onnx", zoo_model=f"{factory}:make")
    assert main(["export", "--check", str(onnx_file), "--n", "20"]) == 2
    assert "never runs code named in a file's metadata" in _error(capsys) and not marker.exists()
    sneaky = _with_metadata(exported, tmp_path / "opts.onnx", model_options=json.dumps({"exec": "x"}))
    assert main(["export", "--check", str(sneaky), "--n", "20"]) == 2
    assert "unknown ModelSpec field(s) ['exec']" in _error(capsys)


def test_export_check_metadata_never_overrides_what_the_user_typed(exported, tmp_path):
    from igdefense.cli import build_parser
    from igdefense.cli.commands import _export_sources
    from igdefense.export import OnnxDefense

    onnx_file = _with_metadata(exported, tmp_path / "o.onnx",
                               model_options=json.dumps({"dataset": "cifar100", "num_classes": 7}))
    args = build_parser().parse_args(["export", "--check", str(onnx_file), "--num-classes", "10"])
    got, rankings = _export_sources(args, OnnxDefense(onnx_file).metadata)
    assert got.name == "smallcnn-robust" and got.num_classes == 10 and got.dataset == "cifar100" and rankings is None


def test_export_check_refuses_an_export_whose_metadata_names_another_model(exported, tmp_path, capsys):
    other = _with_metadata(exported, tmp_path / "other.onnx", zoo_model="smallcnn-refined")  # graph: smallcnn-robust
    assert main(["export", "--check", str(other), "--n", "10"]) == 2
    assert "was made from other weights or rankings than smallcnn-refined" in _error(capsys)
    assert main(["export", "--check", str(exported), "--n", "10"]) == 0  # (its own: parity)


@pytest.mark.parametrize("input_range", [[0, "1"], [0], [True, 1], "0-1"])
def test_an_export_s_crafted_input_range_is_refused(exported, tmp_path, input_range):
    from igdefense.export import OnnxDefense

    config = json.loads(OnnxDefense(exported).metadata["igdefense"])
    crafted = _with_metadata(exported, tmp_path / "r.onnx",
                             igdefense=json.dumps({**config, "input_range": input_range}))
    with pytest.raises(ValueError, match="malformed igdefense metadata .*input_range"):
        OnnxDefense(crafted)


def test_an_onnx_file_without_igdefense_metadata_is_not_run_as_a_defense(exported, tmp_path):
    # (an undefended model's export, inputs and outputs named alike, would run as if it were defended)
    import onnx

    from igdefense.export import OnnxDefense

    model = onnx.load(str(exported))
    kept = [p for p in model.metadata_props if p.key != "igdefense"]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    onnx.save(model, str(tmp_path / "plain.onnx"))
    with pytest.raises(ValueError, match="not an igdefense export"):
        OnnxDefense(tmp_path / "plain.onnx")


def test_export_check_of_a_file_that_is_not_onnx_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    assert main(["export", "--check", str(bad)]) == 2
    assert "not an ONNX model onnxruntime can load" in _error(capsys)


# 4. Every number is checked before it is used ---------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    ({"k": 12.5}, "k must be a whole number"), ({"k": True}, "k must be a number"), ({"k": 0}, "k must be >= 1"),
    ({"sigma": float("nan")}, "sigma must be a finite"), ({"sigma": -0.1}, "sigma must be >= 0"),
    ({"tau": float("inf")}, "tau must be a finite"), ({"tau": 0}, "tau must be > 0"),
    ({"n_samples": 0}, "n_samples must be >= 1"), ({"seed": -1}, "seed must be >= 0"),
    ({"sigma": 8.0}, "sigma must be <= 1"),
])
def test_defense_numbers_are_checked(robust_cnn, kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        IGDefense(robust_cnn, zoo.rankings("smallcnn-robust"), **kw)


@pytest.mark.parametrize("kw, match", [
    ({"eps": 8}, r"did you mean 8/255"), ({"eps": float("nan")}, "eps must be a finite"),
    ({"eot_iter": 0}, "eot_iter must be >= 1"), ({"n_iter": 2.5}, "n_iter must be a whole"),
    ({"rays_queries": -5}, "rays_queries must be >= 1"), ({"seed": 1.5}, "seed must be a whole"),
    ({"base_model": "x"}, "base_model must be the undefended model"), ({"transfer_from": ("pdg",)}, r"names \['pdg'\]"),
])
def test_attack_numbers_are_checked(kw, match):
    with pytest.raises((ValueError, TypeError), match=match):
        AttackSettings(**kw)


@pytest.mark.parametrize("args, match", [
    (["--batch-size", "100000000000000000000000"], "must be at most 2147483647"),  # (not islice's error)
    (["--image-size", "100000000000"], "must be at most 8192"),
    (["--eps", "8"], "did you mean 8/255"), (["--sigma", "1/0"], "not a number or a fraction"),
    (["--sigma", "nan"], "finite"), (["--k", "12.5"], "not a whole number"), (["--images", "0"], "must be >= 1"),
    (["--eot-iter", "-1"], "must be >= 1"), (["--sigma", "8"], "did you mean 8/255"),
    (["--sigma", "300/255"], "images are in [0, 1] units"), (["--draws", "0"], "must be >= 1"),
])
def test_cli_numbers_are_checked_before_any_folder_is_made(tmp_path, capsys, args, match):
    with pytest.raises(SystemExit) as e:
        main(_eval(tmp_path / "D", *args))
    err = capsys.readouterr().err
    assert e.value.code == 2 and match in err and err.count("\n") == 1 and err.endswith("(see igdefense eval --help)\n")
    assert not (tmp_path / "D").exists()


def test_a_k_the_model_cannot_take_leaves_no_folder(tmp_path, capsys):
    assert main(_eval(tmp_path / "D", "--k", "1000")) == 2
    assert "between 1 and the number of neurons" in _error(capsys) and not (tmp_path / "D").exists()


@pytest.mark.parametrize("kw, match", [
    ({"quantile": 1.5}, "quantile must be < 1"), ({"lr": 0}, "lr must be > 0"), ({"num_samples": 0}, ">= 1"),
    ({"eps": float("inf")}, "eps must be a finite"),
])
def test_refine_numbers_are_checked(tmp_path, kw, match):
    from igdefense.refine import refine

    with pytest.raises(ValueError, match=match):
        refine(zoo.load("smallcnn-standard"), None, out_dir=tmp_path / "r", **kw)
    assert not (tmp_path / "r").exists()


def test_a_nan_loss_stops_refinement_before_anything_is_written(tmp_path):
    from igdefense.data import CIFAR10
    from igdefense.refine import refine

    data = CIFAR10("train", indices=np.r_[0:50000:500])
    with pytest.raises(FloatingPointError, match="refinement loss is (nan|inf)"):
        refine(zoo.load("smallcnn-standard"), data, reference=zoo.load("smallcnn-robust"), out_dir=tmp_path,
               rounds=1, attribute_per_round=0, batch_size=32, steps_per_round=3, holdout=20, method="saliency",
               lr=1e30, progress=False)
    assert not (tmp_path / "checkpoint.safetensors").exists() and not (tmp_path / "log.jsonl").exists()


# 5. Every mistake a user makes gets one line and exit 2 -----------------------------------------------

def test_a_corrupt_image_names_its_file(tmp_path, capsys, imagenet_folder):
    from igdefense.image_folder import ImageFolder

    root = imagenet_folder(tmp_path / "val", naming="name")
    victim = ImageFolder(root).files[0]
    victim.write_bytes(victim.read_bytes()[:100])  # truncated
    assert main(["eval", "--data", str(root), "--image-size", "32", "--images", "2", "--attacks", "fgsm"]) == 2
    assert f"cannot read image {victim}" in _error(capsys)


def test_an_empty_class_folder_is_refused_rather_than_shifting_the_labels(tmp_path, capsys, imagenet_folder):
    root = imagenet_folder(tmp_path / "val", naming="name")
    first = sorted(root.iterdir())[0]
    for f in first.iterdir():  # the first class loses its images (or keeps a note): every later label would shift
        f.unlink()
    (first / "README.txt").write_text("moved")
    assert main(["eval", "--data", str(root), "--image-size", "32", "--images", "2", "--attacks", "fgsm"]) == 2
    assert f"class folder(s) ['{first.name}'] hold no images" in _error(capsys)
    (root / ".cache").mkdir()  # a hidden folder is no class
    shutil.rmtree(first)
    from igdefense.image_folder import ImageFolder

    assert ImageFolder(root).classes[0] != first.name


@pytest.mark.parametrize("args, match", [
    (["eval", "--data", str(REPO / "README.md"), "--images", "2"], "found no dataset there"),
    (["eval", "--rankings", str(REPO / "pyproject.toml"), "--images", "2"], "not a readable rankings file"),
    (["refine", "--per-class", "1", "--reference", "nope"], "unknown model 'nope'"),
    (["eval", "--model", "torchvision:resnet18", "--images", "2", "--attacks", "fgsm"], "a download failed"),  # offline
    (["eval", "--model", "timm:resnet18", "--images", "2", "--attacks", "fgsm"], "a download failed"),  # (the hub)
])
def test_user_errors_from_below_are_one_line(capsys, args, match):
    assert main(args) == 2
    assert match in _error(capsys)


def test_files_and_folders_in_the_way_are_one_line(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    assert main(_eval(tmp_path / "afile")) == 2
    assert "afile has a file in the way, where a folder belongs" in _error(capsys)
    assert (tmp_path / "afile").read_text() == "mine"
    (tmp_path / "D" / "base.jsonl").mkdir(parents=True)
    assert main(_eval(tmp_path / "D")) == 2
    assert "base.jsonl is a folder, where a file belongs" in _error(capsys)
    with pytest.raises(SystemExit) as e:
        main(_eval(""))
    assert e.value.code == 2 and "--out: an empty path" in capsys.readouterr().err


def test_an_empty_log_left_by_a_kill_before_its_header_is_a_new_log(tmp_path, capsys):
    out = tmp_path / "D"
    out.mkdir()
    (out / "base.jsonl").write_text("")  # (append creates the file, then writes the header)
    assert main(_eval(out)) == 0
    assert json.loads((out / "base.jsonl").read_text().splitlines()[0])["settings"]["order"] == ["fgsm"]


@pytest.mark.parametrize("attacks, match", [
    ("", "--attacks names no attack"),
    ("fgsm,fgsm", "attack 'fgsm' is named twice"),
    ("transfer", "none of the attacks ['transfer'] runs on 'base', so its worst case would be its clean accuracy"),
    ("adaptive", "none of the attacks ['adaptive'] runs on 'base'"),
])
def test_an_attack_list_that_leaves_a_model_unattacked_is_refused(tmp_path, capsys, attacks, match):
    """Else the model's report row and RobustBench entry would give its clean accuracy as its robustness."""
    out = tmp_path / "D"
    args = _eval(out)
    args[args.index("--attacks") + 1] = attacks
    assert main(args) == 2
    assert match in _error(capsys)
    assert not list(out.glob("*.json*"))  # no log, report or entry written


# 6. Leftovers and concurrency ---------------------------------------------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_killed_writers_temporary_file_is_removed_by_the_next_run(tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    leftover = out / f".fog.tmp{_dead_pid()}.npy"
    leftover.write_bytes(b"x" * 1000)
    assert main(["corruptions", "--names", "brightness", "--per-class", "1", "--quiet", "--out", str(out)]) == 0
    assert not leftover.exists() and (out / "brightness.npy").exists()


def test_a_single_file_s_killed_writer_leaves_no_temporary_for_good(tmp_path):
    """`rank -o`, `train -o`, `export -o` hold no folder: the next write of the same file removes what a
    killed writer of it left, and nothing of a live writer's or of another file's."""
    from igdefense.atomic import atomic_write

    dead, live = tmp_path / f".model.tmp{_dead_pid()}.safetensors", tmp_path / f".model.tmp{os.getppid()}.safetensors"
    other = tmp_path / f".other.tmp{_dead_pid()}.safetensors"
    for f in (dead, live, other):
        f.write_bytes(b"x")
    atomic_write(tmp_path / "model.safetensors", "weights")
    assert not dead.exists() and live.exists() and other.exists()


def test_two_runs_into_one_folder_do_not_both_work_and_a_stale_lock_is_taken_over(tmp_path, capsys):
    import socket

    out = tmp_path / "D"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (out / ".igdefense.lock").write_text(f"{holder.pid} {socket.gethostname()}")
        assert main(_eval(out)) == 2
        assert f"another igdefense run (pid {holder.pid}" in _error(capsys)
        assert not (out / "base.jsonl").exists()
    finally:
        holder.kill()
        holder.wait()
    assert main(_eval(out)) == 0  # its process is gone: the lock is stale
    assert not (out / ".igdefense.lock").exists()


def test_file_factories_are_documented_as_running_code():
    checks = (REPO / "docs" / "checks.md").read_text()  # (the site's "What is checked", linked from the README)
    assert "no file it reads runs code" in checks and "docs/checks.md" in (REPO / "README.md").read_text()
    out = subprocess.run([sys.executable, "-m", "igdefense.cli", "eval", "--help"], capture_output=True, text=True,
                         env={**os.environ, "COLUMNS": "200"}).stdout
    assert "which runs that file" in " ".join(out.split())


def test_logs_name_the_attack_librarys_version_also_without_its_install_record(monkeypatch):
    """On a device machine pyautoattack is a copy put on the path, without its dist-info: the logs
    there must name the same version as here, or neither machine could resume the other's logs."""
    import importlib.metadata

    import pyautoattack

    from igdefense.attacks import attack_library_version

    assert attack_library_version() == importlib.metadata.version("pyautoattack") == pyautoattack.__version__

    def no_record(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", no_record)
    assert attack_library_version() == pyautoattack.__version__


def test_a_log_that_is_a_dangling_symlink_is_not_written_through(tmp_path, capsys):
    out, elsewhere = tmp_path / "run", tmp_path / "elsewhere" / "base.jsonl"
    out.mkdir()
    (out / "base.jsonl").symlink_to(elsewhere)
    assert main(["eval", "--model", "smallcnn-robust", "--images", "2", "--attacks", "fgsm", "--out", str(out)]) == 2
    assert "base.jsonl is a symbolic link, not a log this run wrote" in _error(capsys)
    assert not elsewhere.exists() and not elsewhere.parent.exists()


def test_a_named_igdefense_data_that_is_not_there_is_refused_not_replaced(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("IGDEFENSE_DATA", str(tmp_path / "nonexistent.tar.gz"))
    assert main(["eval", "--model", "smallcnn-robust", "--images", "2", "--attacks", "fgsm",
                 "--out", str(tmp_path / "o")]) == 2
    assert "nonexistent.tar.gz does not exist" in _error(capsys)


def test_train_fresh_twice_keeps_both_backups(tmp_path):
    from igdefense.train import TrainConfig, train

    out = tmp_path / "m.safetensors"
    cfg = TrainConfig(epochs=1, per_class=1, batch_size=10, precision="fp32")
    train(cfg, out, progress=False)
    first = (tmp_path / "m.safetensors.ckpt").read_bytes()
    train(cfg, out, progress=False, fresh=True)
    train(cfg, out, progress=False, fresh=True)
    assert (tmp_path / "m.safetensors.ckpt.bak").read_bytes() == first
    assert (tmp_path / "m.safetensors.ckpt.bak2").exists()


def test_ctrl_c_is_one_line_and_exit_130(tmp_path):
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "igdefense.cli", "eval", "--model", "smallcnn-robust", "--images",
                             "100", "--attacks", "apgd-ce", "--out", str(tmp_path / "o")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # (a shell's background job ignores SIGINT, and so would the child: give it Ctrl-C back)
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (tmp_path / "o" / "base.jsonl").exists() and time.time() < deadline:  # (mid-run: the clean pass is in)
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and err.strip().splitlines()[-1] == (
        "igdefense: interrupted; rerun the same command (a resumable job goes on from what it wrote)")


DEEP = "[" * 100_000 + "]" * 100_000  # JSON nested past Python's stack: json.loads raises RecursionError


def test_json_nested_too_deeply_is_one_line_in_every_reader(tmp_path, capsys):
    from safetensors.torch import save_file

    from igdefense._state import StateFileError, load_state
    from igdefense.rankings import Rankings, RankingsError
    from igdefense.rankings.format import _META_KEY
    from igdefense.zoo.weights_file import load_weights

    setting = tmp_path / "defense.json"
    setting.write_text(DEEP)
    assert main(["eval", "--setting", str(setting), "--images", "2", "--out", str(tmp_path / "a")]) == 2
    assert "is not a readable defense setting (JSON)" in _error(capsys)
    log = tmp_path / "b" / "base.jsonl"
    log.parent.mkdir()
    log.write_text(DEEP + "\n")
    assert main(["eval", "--model", "smallcnn-robust", "--images", "2", "--attacks", "fgsm",
                 "--out", str(log.parent)]) == 2
    assert "base.jsonl:1 is not an igdefense evaluation log header" in _error(capsys)
    for key, read, error in [(_META_KEY, Rankings.load, RankingsError), ("igdefense_state", load_state, StateFileError),
                             ("config", load_weights, ValueError)]:
        path = tmp_path / f"{key}.safetensors"
        save_file({"importance": torch.zeros(10, 4)}, str(path), metadata={key: DEEP})
        with pytest.raises(error):
            read(path)


def test_broken_data_archives_and_foreign_class_folders_are_one_line(tmp_path, capsys):
    from PIL import Image

    real = REPO.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
    cases = {"random.tar.gz": os.urandom(5000), "cut.tar.gz": real.read_bytes()[:100_000]}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        assert main(["eval", "--data", str(tmp_path / name), "--images", "2", "--attacks", "fgsm",
                     "--out", str(tmp_path / f"o-{name}")]) == 2
        assert "is not a readable CIFAR-10 archive (truncated or not a .tar.gz?)" in _error(capsys)
    for split in ("train", "test"):
        (tmp_path / "tree" / split / "unicorn").mkdir(parents=True)
        Image.new("RGB", (32, 32)).save(tmp_path / "tree" / split / "unicorn" / "0001.jpg")
    assert main(["eval", "--data", str(tmp_path / "tree"), "--images", "2", "--attacks", "fgsm",
                 "--out", str(tmp_path / "o")]) == 2
    assert "test/ holds class folders ['unicorn'] that are not CIFAR-10's" in _error(capsys)


def test_rankings_for_images_the_model_cannot_take_are_one_line(tmp_path, capsys):
    rankings = zoo.rankings("smallcnn-robust")
    rankings.input_shape = (1, 32, 32)  # (a crafted file's, or another model's)
    rankings.save(tmp_path / "r.safetensors")
    assert main(["eval", "--model", "smallcnn-robust", "--rankings", str(tmp_path / "r.safetensors"), "--images", "2",
                 "--attacks", "fgsm", "--out", str(tmp_path / "o")]) == 2
    assert "these rankings were made for images of shape (1, 32, 32), which this model cannot take" in _error(capsys)


def test_a_decoded_cifar_cache_planted_with_other_pixels_is_decoded_again(tmp_path, monkeypatch, caplog):
    from igdefense.data import CIFAR10

    monkeypatch.setenv("IGDEFENSE_CACHE", str(tmp_path))
    first = np.array(CIFAR10("test").images[:50])
    (images_file,) = tmp_path.glob("cifar10-jpeg-test-*.images.npy")
    planted = np.lib.format.open_memmap(images_file, mode="r+")  # the same shape and dtype, all zeros
    planted[:] = 0
    planted.flush()
    del planted
    with caplog.at_level("WARNING"):
        again = CIFAR10("test")
    assert np.array_equal(np.array(again.images[:50]), first)
    assert "is not what this cache decoded (its seal differs): decoding again" in caplog.text


def test_an_attack_cache_planted_with_clean_images_is_crafted_again(standard_cnn, test_batch, tmp_path, caplog):
    from igdefense._identity import tensor_digest
    from igdefense._seal import seal
    from igdefense._state import load_state, save_state
    from igdefense.attacks.run import _memo_path, run_attack

    x, y = test_batch
    settings = AttackSettings(cache=tmp_path / "cache", n_iter=5)
    first = run_attack("apgd-ce", standard_cnn, x, y, settings)
    with torch.no_grad():
        assert (standard_cnn(first[0]).argmax(1) != y).sum() >= 10  # (it fools the model on many images)
    path = _memo_path("apgd-ce", standard_cnn, x, y, settings)
    state = load_state(path)
    resealed = seal(settings.cache, path.name, tensor_digest(x, *state["fooled"]))  # (by one who holds the key)
    for planted, why in [({**state, "candidates": [x.clone()]}, "its seal differs"),  # inside the eps-ball
                         ({**state, "candidates": [x.clone()], "seal": resealed}, "classifies right where")]:
        save_state(path, planted)
        caplog.clear()
        with caplog.at_level("WARNING"):
            again = run_attack("apgd-ce", standard_cnn, x, y, settings)
        assert torch.equal(again[0], first[0])
        assert why in caplog.text and str(path) in caplog.text


def test_a_rankings_file_given_as_the_model_is_named_as_one(capsys):
    rankings = REPO / "igdefense/zoo/weights/smallcnn-robust.lo-ir.safetensors"
    assert main(["eval", "--model", str(rankings), "--images", "2", "--attacks", "fgsm"]) == 2
    assert "is not a weights file igdefense train wrote: its metadata holds no training config (it is a rankings " \
           "file: pass it as --rankings)" in _error(capsys)


def test_a_full_disk_names_the_file_being_written(tmp_path):
    import errno

    from igdefense.atomic import atomic_path

    with pytest.raises(OSError, match=r"No space left on device while writing .*report\.json"):
        with atomic_path(tmp_path / "report.json") as tmp:
            tmp.write_text("{")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a full disk's write raises: no file name


def test_a_decompression_bomb_in_an_image_folder_is_one_line(tmp_path, capsys, imagenet_folder, monkeypatch):
    from PIL import Image

    root = imagenet_folder(tmp_path / "val", naming="name")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # (a real bomb is gigabytes: the same check, a lower bar)
    assert main(["eval", "--data", str(root), "--image-size", "32", "--images", "2", "--attacks", "fgsm",
                 "--out", str(tmp_path / "o")]) == 2
    assert "cannot read image" in _error(capsys)


def test_rankings_record_the_probe_actually_used(tmp_path, probe_loader):
    from PIL import Image

    from igdefense.rankings import Rankings

    x, y = next(iter(probe_loader))  # 2 CIFAR-10 training images per class, as a folder of class folders "0".."9"
    for i, (image, label) in enumerate(zip(x, y.tolist())):
        (tmp_path / "folder" / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray((image.permute(1, 2, 0) * 255).round().byte().numpy()).save(
            tmp_path / "folder" / str(label) / f"{i}.png")
    counts = torch.bincount(y)
    assert main(["rank", "--model", "smallcnn-robust", "--data", str(tmp_path / "folder"), "--image-size", "32",
                 "--per-class", "50", "-o", str(tmp_path / "r.safetensors")]) == 0
    probe = Rankings.load(tmp_path / "r.safetensors").probe
    taken = f"{counts.min()}" if counts.min() == counts.max() else f"{counts.min()}-{counts.max()}"
    assert probe.endswith(f"first {taken} per class (of the 50 asked for), 20 images"), probe


def test_no_command_writes_over_another_kind_of_run(tmp_path, capsys):
    sweep = tmp_path / "sweep"  # a committed sweep (written before folders were marked): its report.* must survive
    shutil.copytree(REPO / "benchmarks/results/sweep_smallcnn-robust", sweep)
    before = {f.name: f.read_bytes() for f in sweep.iterdir() if f.is_file()}
    assert main(["eval", "--model", "smallcnn-robust", "--images", "2", "--attacks", "fgsm", "--out", str(sweep)]) == 2
    assert "holds another run's results (sweep), and this evaluation would write over them" in _error(capsys)
    assert {f.name: f.read_bytes() for f in sweep.iterdir() if f.is_file()} == before
    evaluation = tmp_path / "eval"
    assert main(["eval", "--model", "smallcnn-robust", "--images", "2", "--attacks", "fgsm",
                 "--out", str(evaluation)]) == 0
    assert (evaluation / ".igdefense-kind").read_text() == "evaluation\n"
    assert main(["corruptions", "--names", "brightness", "--per-class", "1", "--quiet", "--out", str(evaluation)]) == 2
    assert "holds another run's results (evaluation), and this corruptions dataset would write" in _error(capsys)
    assert main(["eval", "--model", "smallcnn-robust", "--images", "2", "--attacks", "fgsm",
                 "--out", str(evaluation)]) == 0  # the same kind: it resumes
    assert main(["corruptions", "--names", "brightness", "--per-class", "1", "--quiet", "--fresh",
                 "--out", str(evaluation)]) == 0  # --fresh: the evaluation goes into a backup folder first
    assert len(list(evaluation.glob("backup-*/base.jsonl"))) == 1
