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
