"""CD-IR: vectorised soft-WPMI equals the formula written as loops; the whole path on a real model."""

import math

import pytest
import torch

import igdefense
from igdefense.rankings.cd_ir import SoftWPMI, load_clip, soft_wpmi
from igdefense.data import CIFAR10_CLASSES

pytest.importorskip("open_clip")


def _soft_wpmi_loops(similarity, top_indices, cfg):
    """Direct transcription of the reference's formula, one neuron and one class at a time."""
    n_neurons, k = top_indices.shape
    n_classes = similarity.shape[1]
    s = torch.softmax(cfg.a * similarity.double(), dim=1)
    log_pcj = torch.zeros(n_neurons, n_classes, dtype=torch.float64)
    for j in range(n_neurons):
        for c in range(n_classes):
            total = 0.0
            for t in range(k):
                p_t = cfg.p_start - (t / k) * (cfg.p_start - cfg.p_end)
                total += math.log(1 - p_t + p_t * s[top_indices[j, t], c].item() + cfg.eps)
            log_pcj[j, c] = total
    log_pc = torch.logsumexp(log_pcj, 0) - math.log(n_neurons)
    return log_pcj - cfg.lam * log_pc


@pytest.mark.parametrize("k, lam", [(100, 1.0), (7, 0.5)])
def test_vectorised_equals_loops(k, lam):
    gen = torch.Generator().manual_seed(k)
    similarity = torch.rand(150, 6, generator=gen) * 0.6 - 0.3
    top = torch.stack([torch.randperm(150, generator=gen)[:k] for _ in range(12)])
    cfg = SoftWPMI(top_k=k, lam=lam)
    torch.testing.assert_close(soft_wpmi(similarity, top, cfg, neuron_chunk=5),
                               _soft_wpmi_loops(similarity, top, cfg).float(), rtol=0, atol=1e-5)


def test_cd_ir_end_to_end_and_defense_accepts_it(resnet18, foolbox_images, random_clip, tmp_path):
    x, _ = foolbox_images
    rankings = igdefense.cd_ir(resnet18, x, CIFAR10_CLASSES, clip=random_clip, progress=False,
                               settings=SoftWPMI(top_k=8))
    assert rankings.method == "cd-ir" and rankings.importance.shape == (10, 512)
    assert rankings.layer == "linear:input" and torch.isfinite(rankings.importance).all()
    # Streaming over batches gives what one big batch gives (running top-k is exact).
    batches = [x[i:i + 6] for i in range(0, 20, 6)]
    streamed = igdefense.cd_ir(resnet18, batches, CIFAR10_CLASSES, clip=random_clip, progress=False,
                               settings=SoftWPMI(top_k=8))
    torch.testing.assert_close(streamed.importance, rankings.importance, rtol=1e-4, atol=1e-4)
    rankings.save(tmp_path / "cd.safetensors")
    defended = igdefense.wrap(resnet18, tmp_path / "cd.safetensors", k=50, sigma=0.0)
    with torch.no_grad():
        assert defended(x).shape == (20, 10)
    torch.testing.assert_close(defended.class_masks.sum(1), torch.full((10,), 50.0))


def test_offline_tag_says_to_pass_a_local_path(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RuntimeError, match="local path"):
        load_clip("ViT-B-32", pretrained="openai")


def test_wrong_number_of_class_names(resnet18, foolbox_images, random_clip):
    with pytest.raises(ValueError, match="class names"):
        igdefense.cd_ir(resnet18, foolbox_images[0][:4], ["a", "b"], clip=random_clip, progress=False)
