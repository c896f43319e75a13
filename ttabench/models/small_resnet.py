"""A small CIFAR-style ResNet with BatchNorm: the embedded source model.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), section 4.2: the 32x32
ResNet family (3 stages of 3x3 basic blocks at 16/32/64 x ``width`` channels, global average
pooling, linear classifier). One block per stage (ResNet-8) trains to > 90 % on the embedded
data in a couple of minutes on 2 CPU cores, and every convolution is followed by a BatchNorm2d,
which is what test-time normalisation methods act on.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus identity (or 1x1 conv-BN projection) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs; ``blocks_per_stage=1`` gives ResNet-8."""

    def __init__(self, num_classes: int = 10, width: int = 1, blocks_per_stage: int = 1) -> None:
        super().__init__()
        channels = [16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(3, channels[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels[0])
        layers, cin = [], channels[0]
        for i, cout in enumerate(channels):
            for j in range(blocks_per_stage):
                layers.append(BasicBlock(cin, cout, stride=2 if (i > 0 and j == 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(torch.relu(self.bn1(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))
