"""``norm=rbn``: RoTTA's robust BatchNorm as a standalone norm.

Yuan et al., "Robust Test-Time Adaptation in Dynamic Scenarios" (CVPR 2023), section 3.2, and
the official ``core/utils/bn_layers.py`` (``RobustBN1d/2d``); specs/normalization.md, "rbn".
Per BatchNorm layer the global statistics start at the source running statistics and every
updating forward does

    mu <- (1 - a) mu + a mu_batch,   var <- (1 - a) var + a var_batch   (biased, a = 0.05),

stores the new values (detached) and normalises the batch with them; gradients flow through the
a-weighted batch terms, as in the official layer. Without an update the stored values are used.

Which samples update it: the official layer updates only in train mode, and RoTTA predicts in
eval mode, so there only its memory-bank batches move the statistics (RoTTA issue #8). As a
standalone norm (``method=rbn`` = ``method=source norm=rbn``, eval mode) every *test batch*
updates them before being normalised, i.e. an EMA of biased batch statistics with rate a. The
switch is ``layer.adapt`` (``set_adapt`` in base.py), not ``module.training``: a RoTTA
implementation turns it off for predictions and on for its memory batch.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ttabench.norms.base import (
    BATCHNORM_TYPES,
    Norm,
    NormLayer,
    batch_stats,
    replace_batchnorm,
    require_batchnorm,
)


class RobustBatchNorm(NormLayer):
    """Global statistics (buffers ``running_mean``/``running_var``) moved by rate ``alpha``."""

    def __init__(self, bn: _BatchNorm, alpha: float) -> None:
        super().__init__(bn)
        self.alpha = alpha
        self.register_buffer("running_mean", self.source_mean.clone())
        self.register_buffer("running_var", self.source_var.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.adapt:  # clones: autograd saves them, and a later update works in place
            return self.normalize(x, self.running_mean.clone(), self.running_var.clone())
        mean, var = batch_stats(x)
        mean = torch.lerp(self.running_mean, mean, self.alpha)
        var = torch.lerp(self.running_var, var, self.alpha)
        with torch.no_grad():
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
        return self.normalize(x, mean, var)

    @property
    def per_sample(self) -> bool:  # stored statistics unless this forward updates them
        return not self.adapt

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}"


class RobustBNNorm(Norm):
    """Swap every BatchNorm layer (1d, 2d, 3d) for a :class:`RobustBatchNorm`.

    Args:
        alpha: update rate a of the global statistics (RoTTA ``ADAPTER.RoTTA.ALPHA`` = 0.05).
    """

    name = "rbn"

    def __init__(self, alpha: float = 0.05) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"norm=rbn needs 0 <= alpha <= 1, got {alpha}")
        self.alpha = float(alpha)

    def apply(self, model: nn.Module) -> nn.Module:
        count = replace_batchnorm(
            model, lambda bn: RobustBatchNorm(bn, self.alpha), BATCHNORM_TYPES
        )
        require_batchnorm(count, self.name)
        return model
