"""``norm=ema``: running BatchNorm statistics kept up to date on the test stream (norm_ema).

The Doebler/Marsden benchmark's ``norm_ema`` (``EMABatchNorm``); specs/normalization.md, "ema".
Per BatchNorm layer, every test batch first moves the running statistics by PyTorch's BatchNorm
rule with momentum m,

    mu <- (1 - m) mu + m mu_batch,   var <- (1 - m) var + m var_batch * n / (n - 1),

(n = B * H * W values per channel: the running variance takes the unbiased batch variance), and
the batch is then normalised with the *updated* running statistics. m defaults to the layer's
own BN momentum (0.1 for the standard models). The statistics start at the source running
statistics and are buffers, so a method's ``reset`` restores them. No gradient flows through
the statistics (Doebler normalises in eval mode with the stored buffers).

Deliberate deviation: Doebler runs the whole model twice (a train-mode pass that updates every
layer's statistics, with earlier layers normalised by batch statistics, then an eval-mode pass);
here each layer updates and normalises in one pass, so a layer's update sees inputs normalised
by the earlier layers' *updated* running statistics, and the forward costs one pass, not two.
Updates happen whenever ``layer.adapt`` is true, in eval mode too (``Source`` predicts in eval).
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
    momentum_of,
    replace_batchnorm,
    require_batchnorm,
)


class EMABatchNorm(NormLayer):
    """Running statistics (buffers ``running_mean``/``running_var``) moved by each batch with
    momentum ``momentum``; the batch is normalised with the updated values."""

    def __init__(self, bn: _BatchNorm, momentum: float) -> None:
        super().__init__(bn)
        self.momentum = momentum
        self.register_buffer("running_mean", self.source_mean.clone())
        self.register_buffer("running_var", self.source_var.clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.adapt:
            with torch.no_grad():
                mean, var = batch_stats(x)
                n = x.numel() // x.shape[1]
                self.running_mean.lerp_(mean, self.momentum)
                # PyTorch's update takes the unbiased variance; one value per channel has none,
                # so it is taken as the biased one (0) instead of NaN.
                self.running_var.lerp_(var * (n / max(n - 1, 1)), self.momentum)
        if torch.is_grad_enabled():  # autograd saves them; the next update works in place
            return self.normalize(x, self.running_mean.clone(), self.running_var.clone())
        return self.normalize(x, self.running_mean, self.running_var)

    @property
    def per_sample(self) -> bool:  # stored statistics unless this forward updates them
        return not self.adapt

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, momentum={self.momentum}"


class EMANorm(Norm):
    """Swap every BatchNorm layer (1d, 2d, 3d) for an :class:`EMABatchNorm`.

    Args:
        momentum: update momentum m; ``None`` uses each layer's own BN momentum.
    """

    name = "ema"

    def __init__(self, momentum: float | None = None) -> None:
        self.momentum = momentum

    def apply(self, model: nn.Module) -> nn.Module:
        count = replace_batchnorm(
            model,
            lambda bn: EMABatchNorm(bn, momentum_of(bn, self.momentum, self.name)),
            BATCHNORM_TYPES,
        )
        require_batchnorm(count, self.name)
        return model
