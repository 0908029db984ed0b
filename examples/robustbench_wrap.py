"""Wrap a RobustBench model in two lines (rankings computed once on 100 training images per class).

Offline, put the checkpoint at models/cifar10/Linf/<name>.pt as {"state_dict": ...}.

    python examples/robustbench_wrap.py Addepalli2021Towards_RN18
"""

import sys

import igdefense
from igdefense.data import cifar10_loader
from igdefense.robustbench_compat import load_model  # robustbench's, importable beside pyautoattack

name = sys.argv[1] if len(sys.argv) > 1 else "Addepalli2021Towards_RN18"
model = load_model(name, model_dir="models", dataset="cifar10", threat_model="Linf")
rankings = igdefense.lo_ir(model, cifar10_loader("train", per_class=100))
rankings.save(f"{name}.lo-ir.safetensors")

defended = igdefense.wrap(load_model(name, model_dir="models", dataset="cifar10", threat_model="Linf"),
                          f"{name}.lo-ir.safetensors", k=50)
print(defended)
