"""No entry point leaves a hook on the user's model: after success, and when the model raises
midway (captum keeps such a test for every method). The model is the zoo's real SmallCNN inside
a wrapper that raises on its n-th forward, after running (its hooks have fired by then)."""

import pytest
from torch import nn

import igdefense
from igdefense.attacks import AttackSettings
from igdefense.data import CIFAR10_CLASSES
from igdefense.eval.sanity import run_sanity_checks


class FailOnCall(nn.Module):
    def __init__(self, model: nn.Module, fail_on: int | None = None):
        super().__init__()
        self.model, self.fail_on, self.calls = model, fail_on, 0

    def forward(self, x):
        out = self.model(x)
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError(f"planned failure on forward {self.calls}")
        return out


def _modes(model: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in model.named_modules()}


def _hooks_left(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules()
            if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks]


@pytest.fixture(scope="module")
def rankings(robust_cnn, probe_loader):
    return igdefense.lo_ir(FailOnCall(robust_cnn), probe_loader, progress=False)  # sites named "model.<...>"


def _defended(m, rankings, **kw):
    return igdefense.IGDefense(m, rankings, seed=0, **kw).eval()


def _sanity(m, rankings, x, y, _):
    defended = _defended(m, rankings)
    settings = AttackSettings(n_iter=2, square_queries=5, eot_iter=2, draws=2, adaptive_steps=2, adaptive_eot=1)
    try:
        run_sanity_checks(defended, x[:4], y[:4], settings=settings, base_model=m)
    finally:
        assert defended._gradient_tau is None  # the BPDA block was left, too


def _export(m, rankings, x, y, tmp_path):
    from igdefense.export import to_onnx

    to_onnx(_defended(m, rankings), tmp_path / "d.onnx")


ENTRY_POINTS = {
    "split": lambda m, r, x, y, tmp: igdefense.find_split(m, x),
    "defense, shared backbone": lambda m, r, x, y, tmp: _defended(m, r, shared_backbone=True)(x),
    "defense, two passes": lambda m, r, x, y, tmp: _defended(m, r, shared_backbone=False)(x),
    "lo-ir closed form": lambda m, r, x, y, tmp: igdefense.lo_ir(m, [(x, y)], mode="closed", progress=False),
    "lo-ir ablation": lambda m, r, x, y, tmp: igdefense.lo_ir(m, [(x[0:15:3], y[0:15:3]), (x[15::3], y[15::3])],
                                                              mode="ablation", neuron_batch=64, progress=False),
    "sanity": _sanity,
    "export": _export,
}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
def test_no_hook_left_behind(entry, robust_cnn, rankings, test_batch, tmp_path):
    if entry == "export":
        pytest.importorskip("onnx")
    _check_entry_point(ENTRY_POINTS[entry], robust_cnn, rankings, test_batch, tmp_path)


def test_no_hook_left_behind_by_cd_ir(robust_cnn, rankings, test_batch, tmp_path, random_clip):
    from igdefense.rankings.cd_ir import SoftWPMI

    def run(m, r, x, y, tmp):
        igdefense.cd_ir(m, [x[:15], x[15:]], CIFAR10_CLASSES, clip=random_clip, settings=SoftWPMI(top_k=4), progress=False)

    _check_entry_point(run, robust_cnn, rankings, test_batch, tmp_path)


def _check_entry_point(run, model, rankings, images, tmp_path):
    x, y = images
    wrapper = FailOnCall(model.eval())  # in train mode (never .eval()'d), around the user's model in eval mode
    modes = _modes(model)
    run(wrapper, rankings, x, y, tmp_path)
    total = wrapper.calls
    assert total >= 1 and not _hooks_left(wrapper)
    assert _modes(model) == modes  # each module's own mode back, not the wrapper's on all of them
    # Fail on the first forward calls, one in the middle and the last.
    for fail_on in sorted({1, 2, 3, max(1, total // 2), total} & set(range(1, total + 1))):
        wrapper = FailOnCall(model, fail_on)
        with pytest.raises(Exception, match="planned failure"):
            run(wrapper, rankings, x, y, tmp_path)
        assert not _hooks_left(wrapper), f"hooks left after a failure on forward {fail_on} of {total}"
        assert _modes(model) == modes, f"modes changed by a failure on forward {fail_on} of {total}"
