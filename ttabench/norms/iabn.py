"""``norm=iabn``: NOTE's instance-aware batch normalisation.

Gong et al., "NOTE: Robust Continual Test-time Adaptation Against Temporal Correlation",
NeurIPS 2022, section 3.1 (Eq. 3-6); official ``utils/iabn.py`` (specs/methods.md, section 7).
Per channel, the reference statistics (mu_B, var_B) are the batch's (train mode; unbiased
variance over B, H, W) or the running ones (eval mode). Each sample's own statistics (mu_i,
var_i, unbiased over the L = H x W positions) are trusted only where they deviate from the
reference by more than k standard errors of the estimate:

    s_mu  = sqrt((var_B + eps) / L),     s_var = (var_B + eps) sqrt(2 / (L - 1)),
    mu'   = mu_B + softshrink(mu_i - mu_B, k s_mu),
    var'  = max(0, var_B + softshrink(var_i - var_B, k s_var)),
    y     = gamma (x - mu') / sqrt(var' + eps) + beta.

With L <= ``skip_thres`` the reference statistics are used unchanged. In train mode the layer
also moves its running statistics as BatchNorm does (the official layer runs its wrapped BN).

The layer *is* a ``BatchNorm2d``/``BatchNorm1d`` (same parameters and buffers, same state-dict
keys), so a checkpoint trained with IABN (``ttabench pretrain --norm iabn``) loads into either,
and methods find its affine parameters like any BatchNorm's. Unlike the swapped-in
``NormLayer``s, its statistics move in train mode, as NOTE's do: NOTE switches the model to
train mode for its memory batch only.

As a norm (``method=source norm=iabn``, UnMix-TNS's ``note_vanilla``) it converts a standard BN
model at load time (source gamma, beta and running statistics; k = 4); a model already built
with IABN layers (``model=embedded_iabn``) keeps its layers and statistics and takes the norm's
``k`` and ``skip_thres`` (so the recorded ``norm_params`` are the ones used).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ttabench.norms.base import Norm, float32_statistics, require_batchnorm


class _InstanceAware:
    """The IABN forward, shared by the 1d and 2d layers (mixed into a BatchNorm class)."""

    k: float
    skip_thres: int

    @float32_statistics
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        axes = tuple(range(2, x.dim()))
        length = math.prod(x.shape[2:])
        if self.training or self.running_mean is None:
            if self.training and self.running_mean is not None:
                self._update_running(x)
            var_ref, mean_ref = torch.var_mean(x, dim=(0, *axes), correction=1)
        else:
            mean_ref, var_ref = self.running_mean, self.running_var
        shape = (1, -1) + (1,) * len(axes)
        mean_ref, var_ref = mean_ref.reshape(shape), var_ref.reshape(shape)
        if length <= self.skip_thres:
            mean, var = mean_ref, var_ref
        else:
            var_i, mean_i = torch.var_mean(x, dim=axes, keepdim=True, correction=1)
            s_mean = torch.sqrt((var_ref + self.eps) / length)
            s_var = (var_ref + self.eps) * math.sqrt(2 / (length - 1))
            mean = mean_ref + _softshrink(mean_i - mean_ref, self.k * s_mean)
            var = F.relu(var_ref + _softshrink(var_i - var_ref, self.k * s_var))
        out = (x - mean) * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out

    def _update_running(self, x: torch.Tensor) -> None:
        """BatchNorm's own running-statistics update (unbiased variance, the layer's momentum;
        ``momentum=None``: the cumulative average, as BatchNorm)."""
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            momentum = self.momentum
            if momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
            F.batch_norm(
                x, self.running_mean, self.running_var, None, None, True, momentum, self.eps
            )

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, k={self.k}, skip_thres={self.skip_thres}"


class InstanceAwareBatchNorm2d(_InstanceAware, nn.BatchNorm2d):
    """IABN for (B, C, H, W) inputs."""

    def __init__(self, num_features: int, k: float = 4.0, skip_thres: int = 1, **bn) -> None:
        super().__init__(num_features, **bn)
        self.k, self.skip_thres = float(k), int(skip_thres)


class InstanceAwareBatchNorm1d(_InstanceAware, nn.BatchNorm1d):
    """IABN for (B, C, L) inputs (a (B, C) input has L = 1: reference statistics only)."""

    def __init__(self, num_features: int, k: float = 4.0, skip_thres: int = 1, **bn) -> None:
        super().__init__(num_features, **bn)
        self.k, self.skip_thres = float(k), int(skip_thres)


def to_iabn(bn: _BatchNorm, k: float = 4.0, skip_thres: int = 1) -> _BatchNorm:
    """An IABN layer holding ``bn``'s parameters, statistics and momentum."""
    kind = InstanceAwareBatchNorm2d if isinstance(bn, nn.BatchNorm2d) else InstanceAwareBatchNorm1d
    layer = kind(
        bn.num_features,
        k=k,
        skip_thres=skip_thres,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        track_running_stats=bn.track_running_stats,
    )
    layer.load_state_dict(bn.state_dict())
    reference = next(iter(bn.state_dict().values()), None)
    if reference is not None:  # on the source layer's device (a model already on the GPU)
        layer = layer.to(reference.device)
    return layer.train(bn.training)


def _softshrink(d: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """sign(d) max(|d| - threshold, 0) for a tensor threshold (``F.softshrink`` takes a float)."""
    return F.relu(d - threshold) - F.relu(-d - threshold)


def convert_to_iabn(model: nn.Module, k: float = 4.0, skip_thres: int = 1) -> int:
    """Replace every BatchNorm1d/2d by IABN; layers that are IABN already (a model trained
    with IABN) are kept with their statistics and take ``k`` and ``skip_thres``. Returns how
    many IABN layers the model has afterwards."""
    total = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, _InstanceAware):
                child.k, child.skip_thres = float(k), int(skip_thres)
                total += 1
            elif isinstance(child, nn.BatchNorm1d | nn.BatchNorm2d):
                setattr(parent, name, to_iabn(child, k, skip_thres))
                total += 1
    return total


class IABNNorm(Norm):
    """Convert every BatchNorm1d/2d to IABN (NOTE official: k = 4, skip threshold 1).

    Args:
        k: shrinkage width in standard errors (NOTE ``tta.sh`` iabn_k 4).
        skip_thres: use the reference statistics alone where L <= this (NOTE default 1).
    """

    name = "iabn"

    def __init__(self, k: float = 4.0, skip_thres: int = 1) -> None:
        if isinstance(k, bool) or not isinstance(k, int | float) or not k >= 0:
            raise ValueError(f"norm.k must be a number >= 0, got {k!r}")
        if isinstance(skip_thres, bool) or not isinstance(skip_thres, int) or skip_thres < 1:
            # L = 1 has no unbiased instance variance: such layers must use the reference.
            raise ValueError(f"norm.skip_thres must be an integer >= 1, got {skip_thres!r}")
        self.k, self.skip_thres = float(k), skip_thres

    def apply(self, model: nn.Module) -> nn.Module:
        require_batchnorm(convert_to_iabn(model, self.k, self.skip_thres), self.name)
        return model
