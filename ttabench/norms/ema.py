"""``norm=ema``: running BatchNorm statistics kept up to date on the test stream (norm_ema).

The Doebler/Marsden benchmark's ``norm_ema`` (mariodoebler/test-time-adaptation,
``classification/methods/bn.py``, ``EMABatchNorm``; specs/normalization.md, "ema"). Its
forward runs the *whole model twice* on every test batch:

1. train mode, output discarded: every BatchNorm layer normalises with the batch statistics and
   moves its running statistics by PyTorch's rule with the layer's momentum m,
   ``mu <- (1 - m) mu + m mu_batch``, ``var <- (1 - m) var + m var_batch * n / (n - 1)``
   (n = B * H * W values per channel: the running variance takes the unbiased batch variance);
   a layer's batch statistics are those of inputs that the earlier layers normalised with
   *their batch* statistics;
2. eval mode: the prediction, every layer normalising with its updated running statistics.

``rule: two_pass`` (the default) is that rule. ``rule: one_pass`` is a cheaper variant kept as a
named option: each layer updates and normalises in the same pass, so a layer's update sees
inputs normalised by the earlier layers' *updated running* statistics (one forward instead of
two; on the embedded benchmark, 1,000 images per domain, i.i.d. batches of 64: 86.7 % of
predictions agree with the reference, error 14.4 % against the reference's 19.8 %).

m defaults to the layer's own BN momentum (0.1 for the standard models). The statistics start
at the source running statistics and are buffers, so a method's ``reset`` restores them. No
gradient flows through the statistics: the first pass runs without gradient, and the second
normalises with stored buffers, as the reference's eval-mode pass does. The first pass is a
forward pre-hook on the model the norm was applied to, so any method that calls the model gets
it (TENT's gradient forward included); passes inside ``statistics_frozen`` (or with
``adapt = False``) skip it. Unlike the reference's ``model.train()``, the first pass does not
switch dropout on (the BatchNorm zoo models have none).
"""

from __future__ import annotations

from typing import Any

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

RULES = ("two_pass", "one_pass")


class EMABatchNorm(NormLayer):
    """Running statistics (buffers ``running_mean``/``running_var``) moved by each batch with
    momentum ``momentum``.

    ``two_pass``: normalises with the stored statistics, except while ``updating`` (the
    first, train-mode pass that :class:`TwoPassUpdate` runs), when it normalises with the batch
    statistics and moves the stored ones. ``one_pass``: moves them, then normalises the batch
    with the updated values, in every forward with ``adapt`` set.
    """

    def __init__(self, bn: _BatchNorm, momentum: float, two_pass: bool = True) -> None:
        super().__init__(bn)
        self.momentum = momentum
        self.two_pass = two_pass
        self.updating = False
        self.register_buffer("running_mean", self.source_mean.clone())
        self.register_buffer("running_var", self.source_var.clone())

    def _update(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Move the running statistics by the batch's; return the batch's (mean, biased var)."""
        mean, var = batch_stats(x)
        with torch.no_grad():
            n = x.numel() // x.shape[1]
            self.running_mean.lerp_(mean.detach(), self.momentum)
            # PyTorch's update takes the unbiased variance; one value per channel has none,
            # so it is taken as the biased one (0) instead of NaN.
            self.running_var.lerp_(var.detach() * (n / max(n - 1, 1)), self.momentum)
        return mean, var

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.two_pass and self.updating:
            mean, var = self._update(x) if self.adapt else batch_stats(x)
            return self.normalize(x, mean, var)
        if not self.two_pass and self.adapt:
            self._update(x)
        if torch.is_grad_enabled():  # autograd saves them; the next update works in place
            return self.normalize(x, self.running_mean.clone(), self.running_var.clone())
        return self.normalize(x, self.running_mean, self.running_var)

    @property
    def per_sample(self) -> bool:  # stored statistics unless this forward updates them
        return not self.adapt

    def extra_repr(self) -> str:
        rule = RULES[0] if self.two_pass else RULES[1]
        return f"{super().extra_repr()}, momentum={self.momentum}, rule={rule}"


class TwoPassUpdate:
    """Forward pre-hook of the adapted model: before each forward, one gradient-free pass in
    which the :class:`EMABatchNorm` layers normalise with batch statistics and update theirs
    (the reference's train-mode pass). Holds no reference to the model, so a deep copy of the
    model (a teacher, a reset snapshot) carries a working hook of its own."""

    def __call__(self, model: nn.Module, args: tuple[Any, ...]) -> None:
        layers = [m for m in model.modules() if isinstance(m, EMABatchNorm) and m.two_pass]
        if any(layer.updating for layer in layers) or not any(m.adapt for m in layers):
            return  # inside the first pass itself, or statistics frozen
        for layer in layers:
            layer.updating = True
        try:
            with torch.no_grad():
                model(*args)
        finally:
            for layer in layers:
                layer.updating = False


class EMANorm(Norm):
    """Swap every BatchNorm layer (1d, 2d, 3d) for an :class:`EMABatchNorm`.

    Args:
        momentum: update momentum m; ``None`` uses each layer's own BN momentum.
        rule: ``two_pass`` (the reference ``norm_ema``) or ``one_pass`` (update and normalise
            in a single forward).
    """

    name = "ema"

    def __init__(self, momentum: float | None = None, rule: str = "two_pass") -> None:
        if rule not in RULES:
            raise ValueError(f"norm=ema: rule {rule!r} is unknown; valid: {', '.join(RULES)}")
        self.momentum = momentum
        self.rule = rule

    def apply(self, model: nn.Module) -> nn.Module:
        two_pass = self.rule == "two_pass"
        count = replace_batchnorm(
            model,
            lambda bn: EMABatchNorm(bn, momentum_of(bn, self.momentum, self.name), two_pass),
            BATCHNORM_TYPES,
        )
        require_batchnorm(count, self.name)
        if two_pass:
            model.register_forward_pre_hook(TwoPassUpdate())
        return model
