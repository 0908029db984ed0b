"""Defend the shipped robust CIFAR-10 model and compare it with the undefended one on a few
test images (clean and APGD-CE at 8/255).

    python examples/quickstart.py
"""

import igdefense
from igdefense.data import cifar10_loader

model = igdefense.zoo.load("smallcnn-robust")              # eval-mode nn.Module, inputs in [0,1]
rankings = igdefense.zoo.rankings("smallcnn-robust")       # LO-IR, computed once on the training split
defended = igdefense.wrap(model, rankings, sigma=4 / 255, seed=0)

images, labels = next(iter(cifar10_loader("test", per_class=5, batch_size=50)))
for name, m in [("undefended", model), ("defended", defended)]:
    result = igdefense.evaluate(m, (images, labels), attacks=["apgd-ce"], progress=False)
    print(f"{name:11} clean {result.clean_accuracy:.0%}  APGD-CE {result.robust_accuracy['apgd-ce']:.0%}")
