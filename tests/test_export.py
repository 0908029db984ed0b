"""ONNX export of the whole defended model, run by real onnxruntime, checked against PyTorch."""

import warnings

import numpy as np
import pytest
import torch
from torch import nn

import igdefense
from igdefense.data import cifar10_loader
from igdefense.export import ExportError, OnnxDefense, check_parity, to_onnx
from igdefense.export.runtime import choose_providers

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def defended(resnet18, resnet18_rankings):
    return igdefense.wrap(resnet18, resnet18_rankings, k=50, seed=0)


@pytest.mark.parametrize("shared_backbone", [None, True], ids=["cpu default", "shared backbone"])
def test_input_noise_parity_on_real_images(resnet18, resnet18_rankings, shared_backbone, tmp_path):
    defended = igdefense.wrap(resnet18, resnet18_rankings, k=50, seed=0, shared_backbone=shared_backbone)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        path = to_onnx(defended, tmp_path / "d.onnx", noise="input")  # (traced on 2 images, run on 25)
    assert not caught, [str(w.message) for w in caught]  # the torch.export-based exporter: nothing deprecated
    assert [p.name for p in tmp_path.iterdir()] == ["d.onnx"]  # one file, weights inside
    session = OnnxDefense(path)
    assert session.provider == "CPUExecutionProvider" and session.takes_noise
    report = check_parity(session, defended, cifar10_loader("test", per_class=6, batch_size=25))
    assert report["images"] == 60
    assert report["max_abs_logit_diff"] <= 1e-4 and report["argmax_disagreements"] == 0 and report["parity"]


def test_graph_noise_is_random_and_exact_at_sigma_zero(resnet18, resnet18_rankings, foolbox_images, tmp_path):
    x, y = foolbox_images
    noisy = OnnxDefense(to_onnx(igdefense.wrap(resnet18, resnet18_rankings, k=50, tau=1.0), tmp_path / "g.onnx"))
    assert not noisy.takes_noise
    assert np.abs(noisy(x.numpy()) - noisy(x.numpy())).max() > 1e-4  # redrawn at every run
    exact = igdefense.wrap(resnet18, resnet18_rankings, k=50, sigma=0.0)
    session = OnnxDefense(to_onnx(exact, tmp_path / "g0.onnx"))
    with torch.no_grad():
        torch.testing.assert_close(session(x), exact(x), rtol=1e-4, atol=1e-4)
    # with in-graph noise parity is the accuracies' paired difference, within noise; another model's is not
    loader = cifar10_loader("test", per_class=6, batch_size=30)
    report = check_parity(noisy, igdefense.wrap(resnet18, resnet18_rankings, k=50, tau=1.0), loader)
    assert report["noise"] == "graph" and report["within_noise"] and "95% CI" in report["accuracy_difference"]
    other = igdefense.wrap(resnet18, resnet18_rankings.randomized(0), k=2)  # (2 random neurons a class)
    assert not check_parity(session, other, loader)["parity"]


def test_batching_and_types(defended, foolbox_images, tmp_path):
    x = foolbox_images[0]
    session = OnnxDefense(to_onnx(defended, tmp_path / "d.onnx", noise="input"), batch_size=6)
    noise = torch.randn(1, *x.shape) * defended.sigma
    out_t, out_np = session(x, noise), session(x.numpy(), noise.numpy())
    assert isinstance(out_t, torch.Tensor) and isinstance(out_np, np.ndarray) and out_np.shape == (20, 10)
    np.testing.assert_allclose(out_t.numpy(), out_np)
    np.testing.assert_allclose(session(x, noise.numpy()).numpy(), out_np)  # torch images, numpy noise
    with pytest.raises(ValueError, match="noise='input'"):
        session(x)
    with pytest.raises(ValueError, match="float32"):
        session(x.double(), noise)
    # the checks the PyTorch module makes, made here too
    with pytest.raises(ValueError, match=r"expects \[0.0, 1.0\]; scale them \(x / 255\)"):
        session(x.numpy() * 255, noise.numpy())
    with pytest.raises(ValueError, match="NaN or Inf"):
        session(np.full((1, 3, 32, 32), np.nan, np.float32), noise.numpy()[:, :1])
    with pytest.raises(ValueError, match=r"images have shape \(20, 3, 28, 28\), but this model takes \(B, 3, 32, 32\)"):
        session(x[..., :28, :28].contiguous(), noise[..., :28, :28])
    assert session(x.numpy()[:0], noise.numpy()[:, :0]).shape == (0, 10)


def test_a_provider_onnxruntime_lacks_is_an_error_not_a_quiet_cpu_run(defended, tmp_path):
    path = to_onnx(defended, tmp_path / "d.onnx", noise="input")
    assert OnnxDefense(path, providers="CPUExecutionProvider").provider == "CPUExecutionProvider"  # one name
    assert OnnxDefense(path, providers=[("CPUExecutionProvider", {})]).provider == "CPUExecutionProvider"
    with pytest.raises(ValueError, match="onnxruntime here has no NoSuchExecutionProvider"):
        OnnxDefense(path, providers=["NoSuchExecutionProvider", "CPUExecutionProvider"])
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        OnnxDefense(path, batch_size=0)


def test_provider_choice():
    assert choose_providers(["CPUExecutionProvider", "CUDAExecutionProvider"]) == [
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    with pytest.raises(RuntimeError, match="offers none"):
        choose_providers(["AzureExecutionProvider"])


class _Spectral(nn.Module):
    def forward(self, x):  # singular values: no ONNX operator computes them
        return x * torch.linalg.svdvals(x).sum(-1)[..., None, None]


def test_unexportable_operator_is_named(tmp_path):
    model = nn.Sequential(_Spectral(), nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 10)).eval()
    x, y = torch.rand(20, 3, 16, 16), torch.arange(20) % 10
    rankings = igdefense.lo_ir(model, [(x, y)], progress=False)
    with pytest.raises(ExportError, match="aten._linalg_svd.default has no ONNX translation"):
        to_onnx(igdefense.wrap(model, rankings), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())  # nothing half-written left behind
