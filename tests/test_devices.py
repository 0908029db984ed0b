"""Every entry point on every device this machine has (the CPU always, CUDA when present): model and
data on one device, outputs kept there; a model and images on different devices get one clear error.

The same code runs on the device machine (benchmarks/gpu_check.py runs this file there)."""

from contextlib import nullcontext

import pytest
import torch

import igdefense
from igdefense import zoo
from igdefense.data import CIFAR10, CIFAR10_CLASSES

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request) -> torch.device:
    return torch.device(request.param)


@pytest.fixture
def model(device):
    return zoo.load("smallcnn-robust").to(device)


@pytest.fixture
def batch(test_batch, device):
    x, y = test_batch
    return x[:10].to(device), y[:10].to(device)


def _on(device, *tensors):
    return all(t.device.type == device.type for t in tensors)


def _exact(device):
    """Float32 convolutions as a CPU computes them: cuDNN's default TF32 (10 mantissa bits) moves
    SmallCNN's logits by ~1e-3, beyond the 1e-4 that the parity checks below hold the devices to."""
    return torch.backends.cudnn.flags(enabled=True, allow_tf32=False) if device.type == "cuda" else nullcontext()


@pytest.mark.parametrize("shared_backbone", [False, True], ids=["two passes", "shared backbone"])
def test_the_defense_and_its_rankings(model, batch, device, probe_loader, shared_backbone):
    x, y = batch
    rankings = igdefense.lo_ir(model, [(a.to(device), b.to(device)) for a, b in probe_loader], progress=False)
    defended = igdefense.wrap(model, rankings, seed=0, shared_backbone=shared_backbone)
    logits, mask = defended(x), defended.mask(x)
    assert _on(device, logits, mask, defended.class_masks)
    cpu = igdefense.wrap(zoo.load("smallcnn-robust"), rankings, shared_backbone=shared_backbone)
    noise = torch.randn(1, *x.shape) * defended.sigma
    with torch.no_grad(), _exact(device):
        torch.testing.assert_close(defended(x, noise=noise.to(device)).cpu(), cpu(x.cpu(), noise=noise),
                                   rtol=1e-4, atol=1e-4)


def test_cd_ir(model, batch, device, random_clip):
    rankings = igdefense.cd_ir(model, batch[0], CIFAR10_CLASSES, clip=random_clip, progress=False)
    assert rankings.importance.shape == (10, 128)


def test_evaluate_cascade_transfer_and_sanity(model, batch, device, tmp_path):
    from igdefense.eval import AttackSettings, evaluate
    from igdefense.eval.sanity import run_sanity_checks

    defended = igdefense.wrap(model, zoo.rankings("smallcnn-robust"), seed=0)
    settings = AttackSettings(n_iter=3, pgd_steps=2, draws=2, transfer_from=("fgsm",), base_model=model,
                              square_queries=20, adaptive_steps=2, adaptive_eot=1)
    result = evaluate(defended, batch, ["fgsm", "transfer", "pgd", "adaptive"], settings=settings, cascade=True,
                      log_path=tmp_path / "log.jsonl", progress=False)
    assert len(result.correct["clean"]) == 10 and set(result.correct) == {"clean", "fgsm", "transfer", "pgd", "adaptive"}
    assert run_sanity_checks(defended, *batch, settings=settings, base_model=model)


@pytest.mark.parametrize("method", ["lime", "kernel_shap", "saliency", "integrated_gradients"])
def test_attributions(model, batch, device, method):
    from igdefense.attribution import attribute, segment

    x, y = batch
    segments = segment(x[:2])
    assert _on(device, segments)
    scores = attribute(model, x[:2], segments, y[:2], method=method, num_samples=50, n_steps=4)
    assert _on(device, scores) and scores.shape[0] == 2


def test_lime_result_stays_on_the_device(model, batch, device):
    from igdefense.attribution import lime, segment

    x = batch[0][:2]
    result = lime(model, x, segment(x), num_samples=40, seed=0)
    assert _on(device, result.coef)


def test_corruptions(batch, device):
    from igdefense.corruptions import NAMES, corrupt

    for name in NAMES:
        out = corrupt(batch[0][:2], name, 3, seed=0)
        assert _on(device, out) and out.shape == batch[0][:2].shape, name


@pytest.mark.parametrize("method", ["gradcam", "smoothgrad", "lime"])
def test_explanation_maps(model, batch, device, method):
    from igdefense.explain import explain

    maps = explain(model, batch[0][:2], batch[1][:2], method=method, nt_samples=2, num_samples=40)
    assert _on(device, maps) and maps.shape == (2, 32, 32)


def test_explanation_study(model, batch, device):
    from igdefense.explain import explanation_robustness

    study, _ = explanation_robustness(model, *batch, attacks=("fgsm",), methods=("gradcam",), progress=False)
    assert study


def test_refine_one_round(batch, device, tmp_path):
    from igdefense.refine import refine

    model = zoo.load("smallcnn-standard").to(device)
    data = CIFAR10("train", indices=range(0, 50000, 1000))  # 50 images, all classes
    refined = refine(model, data, reference=zoo.load("smallcnn-robust").to(device), out_dir=tmp_path, rounds=1,
                     attribute_per_round=4, num_samples=40, batch_size=8, steps_per_round=2, holdout=10,
                     progress=False)
    assert all(_on(device, p) for p in refined.parameters())


def test_onnx_export_of_a_device_model(model, batch, device, tmp_path):
    pytest.importorskip("onnxruntime")
    from igdefense.export import OnnxDefense, to_onnx

    defended = igdefense.wrap(model, zoo.rankings("smallcnn-robust"), seed=0)
    import onnxruntime as ort

    # onnxruntime's CUDA provider has TF32 of its own (on by default): exact float32 as here
    cuda = device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers()
    providers = [("CUDAExecutionProvider", {"use_tf32": 0}), "CPUExecutionProvider"] if cuda else "auto"
    session = OnnxDefense(to_onnx(defended, tmp_path / "d.onnx", noise="input"), providers=providers)
    x = batch[0]
    noise = torch.randn(1, *x.shape, device=device) * defended.sigma
    with torch.no_grad(), _exact(device):
        out = session(x, noise)  # bound in place on the provider's device, returned on the images'
        assert _on(device, out)
        torch.testing.assert_close(out, defended(x, noise=noise), rtol=1e-4, atol=1e-4)


def test_the_jobs_take_cpu_images_for_a_device_model_and_answer_on_theirs(model, test_batch, device, tmp_path):
    """The jobs move data to the model's device; what they return lands on the images' device."""
    from igdefense.attribution import attribute, segment
    from igdefense.eval import AttackSettings, evaluate
    from igdefense.explain import explain

    x, y = test_batch[0][:4], test_batch[1][:4]  # on the CPU
    rankings = igdefense.lo_ir(model, [test_batch], progress=False)  # (every class)
    defended = igdefense.wrap(model, rankings, seed=0)
    result = evaluate(defended, (x, y), ["fgsm"], settings=AttackSettings(draws=3), progress=False)
    assert len(result.correct["fgsm"]) == 4
    assert _on(torch.device("cpu"), attribute(model, x, segment(x), y, method="saliency"),
               explain(model, x, y, method="gradcam"))


def test_a_module_refuses_images_on_another_device(robust_cnn, test_batch):
    """On any machine: the meta device stands in for a second device (no data, same checks)."""
    from igdefense.eval import AttackSettings
    from igdefense.attacks import run_attack

    x, y = test_batch[0][:2], test_batch[1][:2]
    defended = igdefense.wrap(robust_cnn, zoo.rankings("smallcnn-robust"), seed=0)
    with pytest.raises(ValueError, match=r"images are on meta but the model is on cpu: pass images.to\('cpu'\)"):
        defended(x.to("meta"))
    moved = igdefense.wrap(zoo.load("smallcnn-robust"), zoo.rankings("smallcnn-robust"))
    moved.model.to("meta")
    with pytest.raises(ValueError, match=r"class masks are on cpu: move the defended model \(defended.to\('meta'\)\)"):
        moved(x.to("meta"))
    # the transfer attack crafts on base_model, with the images on the evaluated model's device
    with pytest.raises(ValueError, match="fgsm: the images are on cpu but the attacked model is on meta; a base_model="):
        run_attack("fgsm", zoo.load("smallcnn-robust").to("meta"), x, y, AttackSettings())
