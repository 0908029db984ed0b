"""Refinement: flags, loss, the resumable loop and its CLI (real SmallCNNs, real CIFAR-10 images)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
import torch
from torch import nn

from igdefense.attribution import segment
from igdefense.attribution.segments import segment_counts
from igdefense.refine import CRITERIA, flag_spurious, refine, refinement_loss

pytest.importorskip("captum")


@pytest.fixture(scope="module")
def batch(test_batch):
    x, y = test_batch[0][:12], test_batch[1][:12]
    seg = segment(x)
    return x, y, seg, segment_counts(seg)


def test_flags_follow_the_criteria(standard_cnn, robust_cnn, batch):
    x, y, seg, counts = batch
    flags = flag_spurious(standard_cnn, x, y, seg, reference=robust_cnn, num_samples=100, copies=2)
    for c in CRITERIA:
        f = getattr(flags, c)
        assert f.shape == (12, int(counts.max())) and f.dtype == torch.bool
        assert not f[0, counts[0]:].any()
        assert (f.sum(1) <= counts * 0.2 + 1).all()  # at most the top 20% of an image's superpixels
    assert flags.instability.any() and flags.sensitivity.any() and flags.irrelevance.any()
    b = int(flags.any.sum(1).argmax())
    assert set(flags.why(b)) == set(flags.any[b].nonzero().flatten().tolist())
    # a model agrees with itself: nothing is unsupported by the reference
    same = flag_spurious(standard_cnn, x, y, seg, reference=standard_cnn, method="saliency", copies=0)
    assert not same.irrelevance.any() and not same.sensitivity.any() and same.counts()["any"] == 0


def test_reference_with_other_classes_is_refused(standard_cnn, batch):
    x, y, seg, _ = batch
    five_classes = nn.Sequential(standard_cnn, nn.Linear(10, 5)).eval()
    with pytest.raises(ValueError, match="reference model has 5 classes but the model has 10"):
        flag_spurious(standard_cnn, x, y, seg, reference=five_classes, method="saliency")


def test_penalty_is_the_mean_squared_input_gradient_over_flagged_superpixels(standard_cnn, batch):
    x, y, seg, counts = batch
    flagged = torch.zeros(12, int(counts.max()), dtype=torch.bool)
    flagged[:, 0] = flagged[3, 1] = True
    loss, parts = refinement_loss(standard_cnn, x, y, seg, counts, flagged=flagged, lam=1.0, alpha=0.0)
    x_in = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(nn.functional.cross_entropy(standard_cnn(x_in), y, reduction="sum"), x_in)
    norms = [grad[b].pow(2).sum(0)[seg[b] == j].sum() for b, j in flagged.nonzero().tolist()]
    assert parts.flagged == 13 and parts.penalty == pytest.approx(torch.stack(norms).mean().item(), rel=1e-4)
    loss.backward()  # differentiable in the weights through the input gradient (double backprop)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in standard_cnn.parameters())
    standard_cnn.zero_grad()


def test_nothing_flagged_means_plain_clean_and_fgsm_terms(standard_cnn, batch):
    x, y, seg, counts = batch
    loss, parts = refinement_loss(standard_cnn, x, y, seg, counts, lam=10.0)
    assert parts.flagged == 0 and parts.penalty == 0
    with torch.no_grad():
        clean = nn.functional.cross_entropy(standard_cnn(x), y).item()
    assert parts.hidden_ce == pytest.approx(clean, rel=1e-5)  # no superpixel hidden


@pytest.fixture(scope="module")
def small_train():
    from igdefense.data import CIFAR10

    return CIFAR10("train", indices=np.r_[0:50000:250])  # 200 images, all classes


def _run(data, out, **kw):
    from igdefense import zoo

    model = zoo.load("smallcnn-standard")
    options = dict(rounds=2, attribute_per_round=4, num_samples=50, batch_size=16, steps_per_round=2, holdout=20,
                   method="saliency")
    options.update(kw)
    refine(model, data, reference=zoo.load("smallcnn-robust"), out_dir=out, progress=False, **options)
    return model


def test_a_resumed_run_equals_an_uninterrupted_one(small_train, tmp_path):
    whole = _run(small_train, tmp_path / "whole")
    _run(small_train, tmp_path / "cut", rounds=1)  # killed after round 1
    resumed = _run(small_train, tmp_path / "cut")  # picks up at round 2
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    log = [json.loads(line) for line in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [e["round"] for e in log] == [1, 2] and all(e["steps"] == 2 for e in log)
    assert 0 <= log[-1]["holdout_pgd"] <= log[-1]["holdout_clean"] <= 1
    assert not any(p.name.startswith(".") and p.name != ".igdefense-kind"  # (its mark: a refinement's folder)
                   for p in (tmp_path / "cut").iterdir())  # no temporary left
    with pytest.raises(ValueError, match="holds 2 rounds, more than the 1 asked for"):  # not 2 rounds' weights
        _run(small_train, tmp_path / "cut", rounds=1)


def test_a_run_that_spent_its_budget_is_not_trained_further_by_a_rerun(small_train, tmp_path):
    # the budget stopped round 1; each rerun of the same command once trained one more step and round
    from igdefense._identity import model_digest

    first = _run(small_train, tmp_path / "b", rounds=3, budget_cpu_seconds=0.01)
    again = _run(small_train, tmp_path / "b", rounds=3, budget_cpu_seconds=0.01)
    assert model_digest(again) == model_digest(first)
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [e["round"] for e in log] == [1] and log[0]["budget_hit"]


def test_a_kill_between_a_round_s_two_writes_loses_no_log_line(small_train, tmp_path, monkeypatch):
    import igdefense.refine.loop as loop

    real, calls = loop.atomic_path, []

    def dies_on_round_2s_log(path):
        calls.append(path)
        if Path(path).name == "log.jsonl" and len(calls) > 1:
            raise KeyboardInterrupt  # (a kill: nothing after this write point runs)
        return real(path)

    monkeypatch.setattr(loop, "atomic_path", dies_on_round_2s_log)
    with pytest.raises(KeyboardInterrupt):
        _run(small_train, tmp_path / "r")
    monkeypatch.setattr(loop, "atomic_path", real)
    _run(small_train, tmp_path / "r")
    log = [json.loads(line) for line in (tmp_path / "r" / "log.jsonl").read_text().splitlines()]
    assert [e["round"] for e in log] == [1, 2]


@pytest.mark.parametrize("line", ["{torn", '{"round": "2"}', "[]"])
def test_a_bad_line_in_refine_s_log_is_said_before_any_training(small_train, tmp_path, monkeypatch, line):
    import igdefense.refine.loop as loop

    _run(small_train, tmp_path / "r", rounds=1)
    log = tmp_path / "r" / "log.jsonl"
    log.write_text(line + "\n" + log.read_text())
    monkeypatch.setattr(loop, "refinement_loss", lambda *a, **k: pytest.fail("a round was trained"))
    with pytest.raises(ValueError, match=r"log.jsonl:1 is not a round of this log"):
        _run(small_train, tmp_path / "r")


def test_bad_options_are_refused_before_anything_is_written(small_train, tmp_path):
    from igdefense import zoo

    with pytest.raises(TypeError, match="unknown refine option"):
        _run(small_train, tmp_path / "a", round=3)
    with pytest.raises(ValueError, match="nothing can be flagged"):
        refine(zoo.load("smallcnn-standard"), small_train, out_dir=tmp_path / "b", copies=0)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    _run(small_train, tmp_path / "c", rounds=1)
    with pytest.raises(ValueError, match=r"another run: lam \(1.0 there, 3.0 here\)"):
        _run(small_train, tmp_path / "c", lam=3.0)


def test_two_processes_keep_identical_weights(tmp_path):
    from test_distributed import torchrun

    out = tmp_path / "run"
    cmd = [*torchrun(2), "-m", "igdefense.cli", "refine", "--per-class", "10", "--rounds", "2", "--attribute-per-round", "4",
           "--num-samples", "50", "--batch-size", "16", "--steps-per-round", "2", "--holdout", "20",
           "--method", "saliency", "--quiet", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["processes"] for e in log] == [2, 2] and all(e["weight_gap"] == 0 for e in log)
    # the refined weights load back from the file alone (--model FILE), as the model the run ended with
    from igdefense.models import load_model

    refined = load_model(str(out / "refined.safetensors"))
    assert type(refined).__name__ == "SmallCNN" and json.loads(
        safe_open(str(out / "refined.safetensors"), "pt").metadata()["config"])["refine"]["rounds"] == 2


def test_explain_why_figure_has_a_row_per_image_and_a_panel_per_criterion(standard_cnn, robust_cnn, batch, tmp_path):
    import matplotlib.image

    from igdefense.refine.figure import plot_flags

    x, y, seg, _ = batch
    flags = flag_spurious(standard_cnn, x[:3], y[:3], seg[:3], reference=robust_cnn, method="saliency", copies=0)
    plot_flags(x[:3], seg[:3], flags, tmp_path / "why.png")
    height, width = matplotlib.image.imread(tmp_path / "why.png").shape[:2]
    assert (height, width) == (3 * 2 * 120, 5 * 2 * 120)  # 3 rows; image, superpixels, 3 criteria; 2 in at 120 dpi


def test_cli_refuses_a_run_that_can_flag_nothing(tmp_path, capsys):
    from igdefense.cli import main

    args = ["refine", "--reference", "none", "--copies", "0", "--per-class", "20", "--out", str(tmp_path / "r")]
    assert main(args) == 2
    assert "nothing can be flagged" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("quantile", [0.0, 0.5, 0.8, 0.999])
def test_high_is_each_images_own_quantile(quantile):
    """The batched threshold is torch.quantile of each image's own scores (ties and padding too)."""
    from igdefense.refine.flags import high

    g = torch.Generator().manual_seed(0)
    counts = torch.randint(1, 41, (32,), generator=g)
    scores = (torch.rand(32, 40, generator=g) * 8).round()  # many ties
    expected = torch.zeros(32, 40, dtype=torch.bool)
    for b, n in enumerate(counts.tolist()):
        expected[b, :n] = scores[b, :n].double() > torch.quantile(scores[b, :n].double(), quantile)
    assert torch.equal(high(scores, counts, quantile), expected)
