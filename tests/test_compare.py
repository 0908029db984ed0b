"""Top-k overlap between two rankings."""

import torch

from igdefense import Rankings
from igdefense.rankings.compare import plot_jaccard, topk_jaccard


def _rankings(importance):
    return Rankings(importance, method="lo-ir", layer="fc:input", head_fingerprint="x", input_shape=(3, 8, 8))


def test_jaccard_by_hand(tmp_path):
    a = _rankings(torch.tensor([[4.0, 3, 2, 1], [1, 2, 3, 4]]))
    b = _rankings(torch.tensor([[4.0, 1, 3, 2], [4, 3, 2, 1]]))
    jac = topk_jaccard(a, b, k=2)
    # a0={0,1} b0={0,2}: 1/3; a0 vs b1={0,1}: 1; a1={2,3} vs b0: 1/3; a1 vs b1: 0
    torch.testing.assert_close(jac, torch.tensor([[1 / 3, 1.0], [1 / 3, 0.0]]))
    assert torch.equal(topk_jaccard(a, a, k=2).diagonal(), torch.ones(2))
    assert plot_jaccard(jac, tmp_path / "j.png", ["0", "1"], ["0", "1"]) == tmp_path / "j.png"
    assert (tmp_path / "j.png").stat().st_size > 1000
    assert plot_jaccard(jac, tmp_path / "plot", ["0", "1"], ["0", "1"]) == tmp_path / "plot.png"  # the path written
    assert (tmp_path / "plot.png").is_file() and not (tmp_path / "plot").exists()
