"""Black-box queries answered by onnxruntime: the same function as the PyTorch model, same noise."""

import torch

import igdefense
from igdefense.queries import query_function
from igdefense.rays import RayS


def test_onnx_queries_equal_the_pytorch_model(robust_cnn, test_batch):
    x, y = test_batch
    defended = igdefense.IGDefense(robust_cnn, igdefense.zoo.rankings("smallcnn-robust"), seed=0).eval()
    for model in (robust_cnn, defended):
        query = query_function(model, x)
        assert query is not model  # the CPU path really uses onnxruntime
        defended.reseed(5)
        fast = query(x[:7])  # a batch size other than the export example's
        defended.reseed(5)
        with torch.no_grad():
            slow = model(x[:7])
        torch.testing.assert_close(fast, slow, atol=1e-4, rtol=1e-4)  # same noise draw too


def test_rays_through_onnx_queries_matches_pytorch(robust_cnn, test_batch):
    x, y = test_batch[0][:8], test_batch[1][:8]
    runs = [RayS(m, eps=8 / 255, queries=150, progress=False) for m in (robust_cnn, query_function(robust_cnn, x))]
    advs = [r.perturb(x, y) for r in runs]
    torch.testing.assert_close(runs[0].distance, runs[1].distance, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(advs[0], advs[1], atol=1e-4, rtol=0)
