"""``norm=alpha``: source statistics as a prior on the test-batch statistics (alpha-BN).

You et al., "Test-time Batch Statistics Calibration for Covariate Shift" (arXiv 2110.04065);
the Doebler/Marsden benchmark's ``norm_alpha`` (``AlphaBatchNorm``, from bethgelab/robusta).
Per BatchNorm2d layer and channel (specs/normalization.md, "alpha"):

    mu = (1 - a) mu_s + a mu_batch,   var = (1 - a) var_s + a var_batch,

with the batch statistics over (B, H, W); nothing is kept between batches. Default a = 0.1
(Doebler ``BN.ALPHA``).

``var_batch`` is by default the *unbiased* batch variance, ``n / (n - 1)`` times the biased one
(n = B * H * W): the reference (mariodoebler/test-time-adaptation ``classification/methods/
bn.py``, ``AlphaBatchNorm``, after bethgelab/robusta ``robusta/batchnorm/bn.py``) reads it from
the ``running_var`` of a train-mode, momentum-1 BatchNorm, which PyTorch stores unbiased.
``unbiased: false`` takes the biased variance instead, so that ``a = 1`` equals ``norm=bn``
exactly (``a = 0`` is ``norm=source`` under either). As in the reference, only BatchNorm2d
layers are swapped (BatchNorm1d/3d keep their source statistics).
"""

from __future__ import annotations

import torch
from torch import nn

from ttabench.norms.base import Norm, NormLayer, batch_stats, replace_batchnorm, require_batchnorm


class AlphaBatchNorm(NormLayer):
    """Normalises with the a-weighted mix of source and test-batch statistics (gradients flow
    through the batch statistics, as in ``norm=bn``)."""

    def __init__(self, bn: nn.BatchNorm2d, alpha: float, unbiased: bool = True) -> None:
        super().__init__(bn)
        self.alpha = alpha
        self.unbiased = unbiased

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean, var = batch_stats(x)
        if self.unbiased:
            n = x.numel() // x.shape[1]
            var = var * (n / max(n - 1, 1))
        a = self.alpha
        mean = torch.lerp(self.source_mean, mean, a) if a else self.source_mean
        var = torch.lerp(self.source_var, var, a) if a else self.source_var
        return self.normalize(x, mean, var)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, unbiased={self.unbiased}"


class AlphaNorm(Norm):
    """Swap every BatchNorm2d for an :class:`AlphaBatchNorm` with mixing weight ``alpha``.

    Args:
        alpha: weight of the test-batch statistics, in [0, 1] (Doebler default 0.1).
        unbiased: the unbiased batch variance (the reference's) or, if false, the biased one.
    """

    name = "alpha"

    def __init__(self, alpha: float = 0.1, unbiased: bool = True) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"norm=alpha needs 0 <= alpha <= 1, got {alpha}")
        self.alpha = float(alpha)
        self.unbiased = bool(unbiased)

    def apply(self, model: nn.Module) -> nn.Module:
        count = replace_batchnorm(
            model, lambda bn: AlphaBatchNorm(bn, self.alpha, self.unbiased), (nn.BatchNorm2d,)
        )
        require_batchnorm(count, self.name)
        return model
