"""``norm=source``: BatchNorm layers keep the source running statistics (eval mode)."""

from __future__ import annotations

from torch import nn

from ttabench.norms.base import Norm


class SourceNorm(Norm):
    """No change; works for models with or without BatchNorm."""

    name = "source"

    def apply(self, model: nn.Module) -> nn.Module:
        return model
