"""The precision policy (igdefense.precision): its choice per device and CPU flags, and bfloat16 where
it is used: training, refinement, the defense's passes and attack crafting, with every example judged
and every number reported in float32."""

import json

import pytest
import torch
from torch import nn

import igdefense
from igdefense import precision
from igdefense.eval import AttackSettings, evaluate
from igdefense.precision import Autocast, bf16_units, compute_dtype


@pytest.fixture
def cpu(monkeypatch):
    """``set(flags, faster)``: pretend this CPU has ``flags`` and that bfloat16 measures ``faster``."""
    def set_cpu(flags: set[str], faster: bool) -> None:
        monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
        monkeypatch.setattr(precision, "cpu_bf16_is_faster", lambda: faster)
    return set_cpu


@pytest.mark.parametrize("flags, faster, expected", [
    ({"avx2", "amx_bf16", "avx512_bf16"}, True, torch.bfloat16),  # an AMX Xeon
    ({"avx512f", "avx512_bf16"}, True, torch.bfloat16),  # an AMD EPYC with AVX512-BF16
    ({"avx512f", "avx512_bf16"}, False, torch.float32),  # the unit, but measured slower
    ({"avx2", "fma"}, True, torch.float32),  # no bfloat16 unit: autocast would be emulated
    (set(), False, torch.float32),
])
def test_auto_on_a_cpu_is_bfloat16_only_with_a_bfloat16_unit_that_measures_faster(cpu, flags, faster, expected):
    cpu(flags, faster)
    assert compute_dtype("auto", "cpu") == expected
    assert compute_dtype("fp32", "cpu") == torch.float32  # asked for: whatever the CPU
    assert compute_dtype("bf16", "cpu") == torch.bfloat16


def test_bf16_asked_for_on_a_cpu_without_a_bfloat16_unit_warns_once_that_it_is_emulated(cpu, caplog):
    precision._warn_emulated_bf16.cache_clear()
    cpu({"avx2", "fma"}, False)
    with caplog.at_level("WARNING", logger="igdefense.precision"):
        assert compute_dtype("bf16", "cpu") == compute_dtype("bf16", "cpu") == torch.bfloat16  # (still as asked)
    assert [r.message for r in caplog.records].count(caplog.records[0].message) == 1
    assert "emulated: 7-24x slower than fp32" in caplog.records[0].message
    caplog.clear()
    precision._warn_emulated_bf16.cache_clear()
    cpu({"avx512_bf16"}, True)
    compute_dtype("bf16", "cpu")
    assert not caplog.records


def test_auto_on_a_gpu_is_bfloat16_where_it_has_bfloat16(monkeypatch, cpu):
    cpu(set(), False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert compute_dtype("auto", "cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Tesla V100")
    assert compute_dtype("auto", "cuda") == torch.float32
    with pytest.raises(ValueError, match="Tesla V100 has no bfloat16: use precision fp32"):
        compute_dtype("bf16", "cuda")
    assert compute_dtype("auto", "mps") == torch.float32


def test_the_units_are_read_from_the_cpu_flags_and_bad_names_are_refused():
    assert bf16_units({"sse", "avx512_bf16", "amx_bf16"}) == ["amx_bf16", "avx512_bf16"]
    assert bf16_units({"sse"}) == []
    assert isinstance(precision.cpu_bf16_is_faster(), bool)  # (measured: either answer is this CPU's)
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, not 'fp16'"):
        compute_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="precision must be one of"):
        AttackSettings(precision="half")
    with pytest.raises(ValueError, match="precision must be one of"):
        igdefense.wrap(igdefense.zoo.load("smallcnn-robust"), igdefense.zoo.rankings("smallcnn-robust"),
                       precision="bfloat16")


class Recorder:
    """Notes, for each forward call of a real model, whether it ran under autocast and whether an attack
    was running (evaluate's ``run_attack``: "crafting") or the evaluation was judging ("judging")."""

    def __init__(self, model: nn.Module, monkeypatch):
        import importlib

        self.calls, self.phase = [], "judging"
        self.handle = model.register_forward_pre_hook(
            lambda module, args: self.calls.append((self.phase, torch.is_autocast_enabled("cpu"))))
        evaluation = importlib.import_module("igdefense.eval.evaluate")
        attack = evaluation.run_attack

        def run_attack(*args, **kwargs):
            self.phase = "crafting"
            try:
                return attack(*args, **kwargs)
            finally:
                self.phase = "judging"
        monkeypatch.setattr(evaluation, "run_attack", run_attack)

    def autocast_in(self, phase: str) -> set[bool]:
        return {autocast for p, autocast in self.calls if p == phase}


@pytest.fixture
def recorder(robust_cnn, monkeypatch):
    rec = Recorder(robust_cnn, monkeypatch)
    yield rec
    rec.handle.remove()  # (robust_cnn is the session's)


def test_attacks_craft_in_bfloat16_and_every_candidate_is_judged_in_float32(robust_cnn, test_batch, recorder):
    x, y = test_batch
    result = evaluate(robust_cnn, (x[:8], y[:8]), attacks=["fgsm", "apgd-ce"],
                      settings=AttackSettings(n_iter=3, precision="bf16"), progress=False)
    # every query the attacks made: under bfloat16 autocast, but for each attack's one float32 look at the
    # clean images, for those its bfloat16 copy alone gets wrong (it would skip them; none of these 8)
    assert [autocast for phase, autocast in recorder.calls if phase == "crafting"].count(False) == 2
    assert recorder.autocast_in("judging") == {False}  # the clean pass and every candidate re-classified: float32
    assert set(result.correct) == {"clean", "fgsm", "apgd-ce"}


def test_a_defense_crafted_on_in_bfloat16_is_judged_in_its_own_float32(robust_cnn, test_batch, recorder):
    x, y = test_batch
    defended = igdefense.wrap(robust_cnn, igdefense.zoo.rankings("smallcnn-robust"), sigma=4 / 255)
    recorder.calls.clear()
    evaluate(defended, (x[:6], y[:6]), attacks=["apgd-ce", "adaptive"],
             settings=AttackSettings(n_iter=2, adaptive_steps=2, adaptive_eot=1, draws=3, precision="bf16",
                                     base_model=robust_cnn), progress=False)
    # both passes, the mask-aware attack's parts, its start (but for the start's one float32 look at the
    # clean images, on the base model: see above)
    assert [autocast for phase, autocast in recorder.calls if phase == "crafting"].count(False) == 1
    assert recorder.autocast_in("crafting") == {True, False}
    assert recorder.autocast_in("judging") == {False}  # every draw of every candidate: float32
    assert defended.compute_dtype(x.device) == torch.float32  # left as it was


def test_a_log_of_attacks_crafted_in_bfloat16_does_not_resume_as_float32(robust_cnn, test_batch, tmp_path):
    x, y = test_batch
    log = tmp_path / "run.jsonl"
    evaluate(robust_cnn, (x[:4], y[:4]), attacks=["fgsm"], settings=AttackSettings(precision="bf16"),
             log_path=log, progress=False)
    assert json.loads(log.read_text().splitlines()[0])["settings"]["precision"] == "bf16"
    with pytest.raises(ValueError, match=r"another run: settings\.precision \(bf16 there, fp32 here\); use another"):
        evaluate(robust_cnn, (x[:4], y[:4]), attacks=["fgsm"], log_path=log, progress=False)
    fp32 = tmp_path / "fp32.jsonl"  # a float32 log names no precision: the committed logs' header, unchanged
    evaluate(robust_cnn, (x[:4], y[:4]), attacks=["fgsm"], log_path=fp32, progress=False)
    assert "precision" not in json.loads(fp32.read_text().splitlines()[0])["settings"]


def test_a_bfloat16_defense_takes_its_pseudo_label_in_float32(robust_cnn, test_batch):
    x, _ = test_batch
    rankings = igdefense.zoo.rankings("smallcnn-robust")
    fp32 = igdefense.wrap(robust_cnn, rankings)
    bf16 = igdefense.wrap(robust_cnn, rankings, precision="bf16")
    noise = torch.randn_like(x) * 4 / 255
    with torch.autocast("cpu", dtype=torch.bfloat16):
        noisy_logits = robust_cnn(x + noise)
    expected = torch.softmax(noisy_logits.float() / bf16.tau, dim=1) @ bf16.class_masks
    assert torch.equal(bf16.mask(x, noise), expected)  # (a bfloat16 softmax would round before the sharp tau)
    out = bf16(x, noise)
    assert out.dtype == torch.float32
    assert (out.argmax(1) == fp32(x, noise).argmax(1)).float().mean() >= 0.9
    assert "precision" not in fp32.identity() and bf16.identity()["precision"] == "bf16"


def test_a_bfloat16_defense_exports_a_float32_graph(robust_cnn, test_batch, tmp_path):
    import onnx

    from igdefense.export import OnnxDefense, to_onnx

    x, _ = test_batch
    defended = igdefense.wrap(robust_cnn, igdefense.zoo.rankings("smallcnn-robust"), precision="bf16")
    to_onnx(defended, tmp_path / "m.onnx", noise="input")
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    dtypes = {t.data_type for t in graph.initializer} | {v.type.tensor_type.elem_type for v in graph.value_info}
    assert onnx.TensorProto.BFLOAT16 not in dtypes
    noise = torch.randn_like(x).unsqueeze(0) * 4 / 255
    fp32 = igdefense.wrap(robust_cnn, igdefense.zoo.rankings("smallcnn-robust"))(x, noise)
    assert torch.allclose(OnnxDefense(tmp_path / "m.onnx")(x, noise), fp32, atol=1e-3)


def test_autocast_wraps_a_model_for_an_attack_and_keeps_its_other_attributes(robust_cnn, test_batch):
    x, _ = test_batch
    wrapped = Autocast(robust_cnn, torch.bfloat16)
    out = wrapped(x)
    assert out.dtype == torch.float32 and wrapped.fc is robust_cnn.fc
    assert not torch.equal(out, robust_cnn(x))  # computed in bfloat16 ...
    assert torch.allclose(out, robust_cnn(x), atol=0.1 * robust_cnn(x).abs().max().item())  # ... close to it


class AutocastRecorder(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = []

    def forward(self, x):
        self.calls.append(torch.is_autocast_enabled("cpu"))
        return x


def test_training_computes_in_float32_unless_asked_for_bfloat16(monkeypatch, tmp_path):
    from igdefense import train as training

    seen = {}
    original = training.TrainConfig.build

    def build(cfg):
        model = original(cfg)
        probe = seen.setdefault(cfg.precision, AutocastRecorder())
        model.features.insert(0, probe)  # (the SmallCNN's first layer: every forward passes it)
        return model

    monkeypatch.setattr(training.TrainConfig, "build", build)
    for p in ("fp32", "bf16"):
        cfg = training.TrainConfig(robust=True, epochs=1, per_class=2, batch_size=10, precision=p)
        training.train(cfg, tmp_path / f"{p}.safetensors", progress=False)
    assert seen["fp32"].calls and not any(seen["fp32"].calls)
    assert seen["bf16"].calls and all(seen["bf16"].calls)


def test_a_training_checkpoint_does_not_resume_in_another_precision(tmp_path):
    from igdefense.train import TrainConfig, train

    out = tmp_path / "m.safetensors"
    train(TrainConfig(epochs=1, per_class=2, batch_size=10, precision="bf16"), out, progress=False)
    out.unlink()
    with pytest.raises(ValueError, match=r"; precision \(bf16 there, fp32 here\)"):
        train(TrainConfig(epochs=1, per_class=2, batch_size=10, precision="fp32"), out, progress=False)


def test_train_refine_eval_and_export_under_precision_bf16_on_the_cpu(tmp_path):
    import subprocess
    import sys

    def run(*args):
        done = subprocess.run([sys.executable, "-m", "igdefense.cli", *args], capture_output=True, text=True,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout + done.stderr

    assert "in bf16" in run("train", "--precision", "bf16", "--robust", "--attack", "n-fgsm", "--epochs", "1",
                            "--per-class", "2", "--quiet", "-o", "m.safetensors")
    run("eval", "--model", "smallcnn-robust", "--attacks", "fgsm", "--images", "10", "--precision", "bf16",
        "--draws", "3", "--out", "ev")
    header = json.loads((tmp_path / "ev" / "lo-ir.jsonl").read_text().splitlines()[0])
    assert header["settings"]["precision"] == "bf16"
    run("refine", "--precision", "bf16", "--per-class", "30", "--rounds", "1", "--attribute-per-round", "4",
        "--num-samples", "20", "--steps-per-round", "1", "--batch-size", "10", "--holdout", "20", "--quiet",
        "--out", "rf")
    assert (tmp_path / "rf" / "refined.safetensors").exists()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_images_and_int32_labels_are_evaluated_as_the_model_takes_them(robust_cnn, test_batch, dtype):
    x, y = test_batch
    x, y = x[:8].to(dtype), y[:8]
    defended = igdefense.wrap(robust_cnn, igdefense.zoo.rankings("smallcnn-robust"))
    for model in (robust_cnn, defended):
        settings = AttackSettings(n_iter=3, draws=3)
        ours = evaluate(model, (x, y.int()), attacks=["fgsm", "apgd-ce"], settings=settings, progress=False)
        cast = evaluate(model, (x.float(), y), attacks=["fgsm", "apgd-ce"], settings=settings, progress=False)
        assert all(torch.equal(ours.correct[k], cast.correct[k]) for k in cast.correct)
