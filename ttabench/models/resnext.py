"""CIFAR ResNeXt-29: RobustBench's CIFAR-100 ``Hendrycks2020AugMix_ResNeXt`` source model.

Xie et al., "Aggregated Residual Transformations for Deep Neural Networks" (CVPR 2017), the
CIFAR variant (3 stages of bottleneck blocks at 64/128/256 x 4 output channels, grouped 3x3
convolutions); Hendrycks et al., "AugMix" (ICLR 2020) trained the 29-layer, cardinality-4,
base-width-32 network on CIFAR-100. Written to reproduce the state-dict layout of RobustBench's
``model_zoo/architectures/resnext.py`` (from D-X-Y/ResNeXt-DenseNet): ``conv_1_3x3``, ``bn_1``,
``stage_{1,2,3}.{i}.{conv_reduce,bn_reduce,conv_conv,bn,conv_expand,bn_expand,downsample.{0,1}}``,
``classifier``. 6,900,132 parameters with the 100-class head (counted; the papers give none for
this width).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

EXPANSION = 4


class ResNeXtBottleneck(nn.Module):
    """Type-C block: 1x1 reduce, grouped 3x3, 1x1 expand, each followed by BatchNorm."""

    def __init__(
        self, cin: int, planes: int, cardinality: int, base_width: int, stride: int = 1
    ) -> None:
        super().__init__()
        width = int(math.floor(planes * base_width / 64.0)) * cardinality
        cout = planes * EXPANSION
        self.conv_reduce = nn.Conv2d(cin, width, 1, bias=False)
        self.bn_reduce = nn.BatchNorm2d(width)
        self.conv_conv = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn = nn.BatchNorm2d(width)
        self.conv_expand = nn.Conv2d(width, cout, 1, bias=False)
        self.bn_expand = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn_reduce(self.conv_reduce(x)))
        out = F.relu(self.bn(self.conv_conv(out)))
        out = self.bn_expand(self.conv_expand(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(shortcut + out)


class CifarResNeXt(nn.Module):
    """ResNeXt-``depth`` (depth = 9n + 2) for 32x32 inputs."""

    def __init__(
        self, depth: int = 29, cardinality: int = 4, base_width: int = 32, num_classes: int = 100
    ) -> None:
        super().__init__()
        if (depth - 2) % 9:
            raise ValueError(f"CIFAR ResNeXt depth must be 9n + 2, got {depth}")
        n = (depth - 2) // 9
        self.conv_1_3x3 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn_1 = nn.BatchNorm2d(64)
        cin = 64
        stages = []
        for planes, stride in ((64, 1), (128, 2), (256, 2)):
            blocks = []
            for i in range(n):
                blocks.append(
                    ResNeXtBottleneck(cin, planes, cardinality, base_width, stride if i == 0 else 1)
                )
                cin = planes * EXPANSION
            stages.append(nn.Sequential(*blocks))
        self.stage_1, self.stage_2, self.stage_3 = stages
        self.classifier = nn.Linear(cin, num_classes)
        self._init_like_original()

    def _init_like_original(self) -> None:
        # The official initialisation (so pretrained=false matches a from-scratch run there).
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_normal_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn_1(self.conv_1_3x3(x)))
        x = self.stage_3(self.stage_2(self.stage_1(x)))
        # Global average pooling; the original's AvgPool2d(8) is the same at 32x32 input.
        return self.classifier(x.mean(dim=(2, 3)))


class AugMixResNeXt(CifarResNeXt):
    """``Hendrycks2020AugMix_ResNeXt``: normalises inside, ``(x - mu) / sigma`` with 0.5 / 0.5.

    ``mu`` and ``sigma`` are buffers, as in RobustBench, but its checkpoint does not contain
    them (RobustBench loads it with ``strict=False``); the loader accepts exactly these two keys
    as missing and keeps the 0.5 defaults.
    """

    OPTIONAL_KEYS = frozenset({"mu", "sigma"})

    def __init__(self, num_classes: int = 100) -> None:
        super().__init__(depth=29, cardinality=4, base_width=32, num_classes=num_classes)
        self.register_buffer("mu", torch.full((1, 3, 1, 1), 0.5))
        self.register_buffer("sigma", torch.full((1, 3, 1, 1), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward((x - self.mu) / self.sigma)
