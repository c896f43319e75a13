"""WideResNet with pre-activation blocks: RobustBench's CIFAR-10 ``Standard`` source model.

Zagoruyko & Komodakis, "Wide Residual Networks" (BMVC 2016): WRN-28-10 has 36.5 M parameters
(Table 1; 36,479,194 exactly with a 10-class head). Written to reproduce the state-dict layout of
RobustBench's ``model_zoo/architectures/wide_resnet.py`` (itself from the TRADES code), so its
checkpoints load with strict key matching: ``conv1``,
``block{1,2,3}.layer.{i}.{bn1,conv1,bn2,conv2[,convShortcut]}``, ``bn1``, ``fc``. RobustBench's
optional unused ``sub_block1`` is left out: ``Standard`` is built without it. The network takes
images in [0, 1] unnormalised (mean 0, std 1), as RobustBench's CIFAR models do.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus an identity or 1x1-conv shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.equal_in_out = cin == cout
        if not self.equal_in_out:
            self.convShortcut = nn.Conv2d(cin, cout, 1, stride, 0, bias=False)  # noqa: N815

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(act))))
        # As in the original code: a projection shortcut sees the *activated* input, an identity
        # shortcut the raw one. Changing this changes the function the checkpoints compute.
        return out + (x if self.equal_in_out else self.convShortcut(act))


class NetworkBlock(nn.Module):
    """``n`` blocks of one width; only the first changes width and stride (key ``layer``)."""

    def __init__(self, n: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[PreActBlock(cin if i == 0 else cout, cout, stride if i == 0 else 1) for i in range(n)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    """WRN-``depth``-``widen_factor`` for 32x32 inputs (depth = 6n + 4)."""

    def __init__(self, depth: int = 28, widen_factor: int = 10, num_classes: int = 10) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.block1 = NetworkBlock(n, widths[0], widths[1], 1)
        self.block2 = NetworkBlock(n, widths[1], widths[2], 2)
        self.block3 = NetworkBlock(n, widths[2], widths[3], 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self._init_like_original()

    def _init_like_original(self) -> None:
        # The official initialisation, so that pretrained=false matches a from-scratch run there:
        # He-normal over fan-out for convolutions, BN to identity, zero classifier bias.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.relu(self.bn1(out))
        # Global average pooling; the original's avg_pool2d(8) is the same at 32x32 input.
        return self.fc(out.mean(dim=(2, 3)))
