"""RobustBench's load_model works offline from a local model_dir, and its models wrap in two lines."""

import subprocess
import sys

import torch

import igdefense


def test_robustbench_imports_through_igdefense_and_import_igdefense_changes_nothing():
    # a fresh interpreter: robustbench 1.1.1 alone fails on "import autoattack" (PyPI has pyautoattack)
    code = ("import sys, igdefense; assert 'autoattack' not in sys.modules; "
            "from igdefense.robustbench_compat import load_model; print(load_model.__module__); "
            "from robustbench.utils import load_model as again; assert again is load_model")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "robustbench.utils"


def test_load_model_offline_and_wrap(tmp_path, probe_loader, foolbox_images):
    from igdefense.robustbench_compat import load_model
    from robustbench.model_zoo.cifar10 import linf  # the registry load_model reads

    name = "Addepalli2021Towards_RN18"
    # The documented offline layout: <model_dir>/<dataset>/<threat_model>/<name>.pt = {"state_dict": ...}.
    # (Real weights come from RobustBench's servers; here the architecture's own initial weights.)
    (tmp_path / "cifar10" / "Linf").mkdir(parents=True)
    torch.save({"state_dict": linf[name]["model"]().state_dict()}, tmp_path / "cifar10" / "Linf" / f"{name}.pt")

    model = load_model(name, model_dir=tmp_path, dataset="cifar10", threat_model="Linf")
    rankings = igdefense.lo_ir(model, probe_loader, progress=False)
    defended = igdefense.wrap(model, rankings, k=50)
    with torch.no_grad():
        assert defended(foolbox_images[0][:4]).shape == (4, 10)
    assert rankings.num_neurons == 512
