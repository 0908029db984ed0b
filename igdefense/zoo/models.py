"""Architectures of the models igdefense ships."""

from __future__ import annotations

import torch
from torch import nn


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """A 6-conv CIFAR CNN (289k parameters at the default widths), inputs in [0,1].

    3x3 conv-BN-ReLU x2 per stage, max-pool after each stage, global average pool, linear head.
    The head's input is the ``widths[-1]``-neuron penultimate layer the defense masks.
    """

    def __init__(self, widths: tuple[int, int, int] = (32, 64, 128), num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for w in widths:
            layers += _conv_bn_relu(cin, w) + _conv_bn_relu(w, w) + [nn.MaxPool2d(2)]
            cin = w
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,H,W) -> (B,classes)
        return self.fc(self.features(x))


class _PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = (nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(torch.relu(self.bn2(out))) + skip


class PreActResNet18(nn.Module):
    """The pre-activation ResNet-18 of "Fast is better than free" (Wong et al. 2020) and RobustBench's
    CIFAR-10 entries (11.2M parameters), inputs in [0, 1] normalised inside by the CIFAR-10 mean and
    std; the 512-neuron input of ``linear`` is the penultimate layer the defense masks."""

    MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        blocks, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            blocks.append(nn.Sequential(_PreActBlock(cin, cout, stride), _PreActBlock(cout, cout, 1)))
            cin = cout
        self.layer1, self.layer2, self.layer3, self.layer4 = blocks
        self.bn = nn.BatchNorm2d(512)
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B,3,32,32) -> (B,classes)
        out = self.conv1((x - self.mean) / self.std)
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = torch.relu(self.bn(out))
        return self.linear(torch.flatten(nn.functional.adaptive_avg_pool2d(out, 1), 1))


ARCHITECTURES = {"smallcnn": SmallCNN, "preact-resnet18": PreActResNet18}
