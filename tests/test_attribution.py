"""Batched LIME equals the `lime` package (0.2.0.1) given the same superpixels and samples."""

import numpy as np
import pytest
import torch

from igdefense.attribution import lime, lime_samples, segment

pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def images(test_batch):
    return test_batch[0][::10]  # 3 real test images of different classes


@pytest.fixture(scope="module")
def segments(images):
    return segment(images)


def test_segments_are_numbered_without_gaps_and_in_the_useful_range(images, segments):
    assert segments.shape == (3, 32, 32) and segments.dtype == torch.int64
    for seg in segments:
        ids = seg.unique()
        assert torch.equal(ids, torch.arange(len(ids)))  # 0..n-1 (SLIC starts at 1 unless told)
        assert 15 <= len(ids) <= 50
    quick = segment(images, "quickshift")
    assert all(15 <= len(s.unique()) <= 60 for s in quick)


@pytest.mark.parametrize("hide_color", [None, 0.0])
def test_coefficients_equal_the_lime_package(standard_cnn, images, segments, hide_color):
    from lime.lime_image import LimeImageExplainer

    num_samples, seed = 200, 3
    counts = [int(s.max()) + 1 for s in segments]
    widest = max(counts)
    # The package draws each image's matrix from RandomState(seed): replay it, pad to the widest.
    samples = torch.stack([torch.cat([lime_samples(num_samples, n, seed), torch.ones(num_samples, widest - n,
                                                                                     dtype=torch.long)], 1)
                           for n in counts])
    ours = lime(standard_cnn, images, segments, samples=samples, hide_color=hide_color, num_samples=num_samples)

    def classify(batch):
        with torch.no_grad():
            return torch.softmax(standard_cnn(torch.from_numpy(batch).permute(0, 3, 1, 2).float()), 1).numpy()

    for b, (img, seg) in enumerate(zip(images, segments)):
        ref = LimeImageExplainer(kernel_width=0.25, random_state=seed).explain_instance(
            img.permute(1, 2, 0).double().numpy(), classify, top_labels=5, num_samples=num_samples,
            hide_color=hide_color, segmentation_fn=lambda _, s=seg.numpy(): s, random_seed=0)
        assert ours.labels[b].tolist() == list(ref.top_labels)
        for i, label in enumerate(ref.top_labels):
            coef = np.zeros(widest)
            for feature, value in ref.local_exp[label]:
                coef[feature] = value
            np.testing.assert_allclose(ours.coef[b, i].numpy(), coef, rtol=0, atol=1e-5)
            assert abs(ours.intercept[b, i].item() - ref.intercept[label]) < 1e-5
    assert not ours.coef[1, :, counts[1]:].any()  # nothing past an image's own segments


def test_seeded_draws_and_explicit_labels(standard_cnn, images, segments):
    a = lime(standard_cnn, images, segments, num_samples=100, seed=0, labels=torch.tensor([3, 5]))
    b = lime(standard_cnn, images, segments, num_samples=100, seed=0, labels=torch.tensor([3, 5]), batch_size=7)
    assert a.coef.shape == (3, 2, int(segments.max()) + 1) and a.labels.tolist() == [[3, 5]] * 3
    torch.testing.assert_close(a.coef, b.coef)  # batching does not change the result


def test_the_explanation_finds_what_the_model_uses(standard_cnn, images, segments):
    # Hiding the superpixels LIME ranks highest must hurt the predicted class more than hiding
    # as many of those it ranks lowest: the coefficients mean something for this model.
    result = lime(standard_cnn, images, segments, num_samples=500, seed=0, top_labels=1)
    with torch.no_grad():
        for b in range(len(images)):
            order = result.coef[b, 0, :int(result.n_segments[b])].argsort(descending=True)
            label = int(result.labels[b, 0])

            def without(ids):
                hidden = torch.isin(segments[b], ids)
                return torch.softmax(standard_cnn(torch.where(hidden, 0.5, images[b])[None]), 1)[0, label]

            assert without(order[:5]) < without(order[-5:])


@pytest.mark.parametrize("change, match", [
    (lambda x, s: (x, torch.where(s == 3, 4, s)), "gaps"),
    (lambda x, s: (x * 255, s), "x / 255"),
    (lambda x, s: (x, s[:2]), "shape"),
    (lambda x, s: (x, s.float()), "integer"),
    (lambda x, s: (x, s - 1), ">= 0"),
])
def test_bad_input(standard_cnn, images, segments, change, match):
    x, s = change(images, segments)
    with pytest.raises(ValueError, match=match):
        lime(standard_cnn, x, s, num_samples=10)


def test_bad_samples_and_labels(standard_cnn, images, segments):
    with pytest.raises(ValueError, match="0/1 matrix"):
        lime(standard_cnn, images, segments, samples=torch.ones(10, 3))  # narrower than the segment count
    with pytest.raises(ValueError, match="class indices"):
        lime(standard_cnn, images, segments, num_samples=10, labels=torch.tensor([10]))


def test_every_method_scores_each_superpixel_of_the_explained_class(standard_cnn, images, segments):
    from igdefense.attribution import METHODS, attribute

    target = torch.tensor([3, 0, 9])
    counts = [int(s.max()) + 1 for s in segments]
    scores = {m: attribute(standard_cnn, images, segments, target, method=m, num_samples=300) for m in METHODS}
    for m, s in scores.items():
        assert s.shape == (3, max(counts)) and torch.isfinite(s).all(), m
        assert not s[0, counts[0]:].any(), m  # nothing past an image's own segments
    assert (scores["saliency"] >= 0).all()  # a magnitude
    # LIME and KernelSHAP fit the same hiding: their scores agree in sign and rank on real images
    for b, n in enumerate(counts):
        lime_s, shap_s = scores["lime"][b, :n], scores["kernel_shap"][b, :n]
        assert torch.corrcoef(torch.stack([lime_s, shap_s]))[0, 1] > 0.6


def test_integrated_gradients_add_up_to_the_probability_hiding_removes(standard_cnn, images, segments):
    from igdefense.attribution import attribute, hidden_fill

    target = torch.tensor([1, 2, 3])
    scores = attribute(standard_cnn, images, segments, target, method="integrated_gradients", n_steps=128)
    with torch.no_grad():
        p = torch.softmax(standard_cnn(images), 1)[range(3), target]
        p_hidden = torch.softmax(standard_cnn(hidden_fill(images, segments)), 1)[range(3), target]
    torch.testing.assert_close(scores.sum(1), (p - p_hidden).double(), atol=0.01, rtol=0.02)


def test_saliency_is_the_autograd_input_gradient_summed_per_superpixel(standard_cnn, images, segments):
    from igdefense.attribution import attribute

    target = torch.tensor([4, 4, 4])
    x = images.clone().requires_grad_(True)
    p = torch.softmax(standard_cnn(x), 1)[range(3), target].sum()
    grad, = torch.autograd.grad(p, x)
    scores = attribute(standard_cnn, images, segments, target, method="saliency")
    for b in range(3):
        j = int(segments[b, 5, 5])
        torch.testing.assert_close(scores[b, j], grad[b].abs().sum(0)[segments[b] == j].sum().double())


def test_unknown_method_and_bad_targets_say_what_to_pass(standard_cnn, images, segments):
    from igdefense.attribution import attribute

    with pytest.raises(ValueError, match="gives a pixel map"):
        attribute(standard_cnn, images, segments, method="gradcam")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 9\]"):
        attribute(standard_cnn, images, segments, torch.tensor([0, 1, 10]), method="saliency")
