"""Input normalisation belongs to the model, not to the dataset.

Datasets hand out uint8 images; the runner turns them into floats in [0, 1]; the wrapper applies
the per-channel mean/std the source network was trained with (RobustBench CIFAR models take
[0, 1] unchanged: mean 0, std 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class NormalizedModel(nn.Module):
    """``net((x - mean) / std)`` for images ``x`` in [0, 1], shape (B, 3, H, W)."""

    def __init__(self, net: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)
