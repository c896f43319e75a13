"""``bn``: test-batch BatchNorm statistics (TBN, BN-1, norm_test, "BN adapt").

Schneider et al., "Improving robustness against common corruptions by covariate shift
adaptation" (NeurIPS 2020); Nado et al., "Evaluating prediction-time batch normalization for
robustness under covariate shift" (2020). Every BatchNorm layer forgets its running statistics
and normalises with the current batch's mean and biased variance over (B, H, W); nothing is kept
between batches (Tent's ``configure_model`` does the same: ``track_running_stats=False``,
``running_mean = running_var = None``). The prediction is that forward pass on the batch itself,
so it depends on which other samples share the batch: the weakness non-i.i.d. streams expose.
"""

from __future__ import annotations

import torch
from torch import nn

from ttabench.methods.base import TTAMethod


def use_batch_statistics(model: nn.Module) -> int:
    """Make every BatchNorm layer normalise with batch statistics; return how many changed."""
    count = 0
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.track_running_stats = False
            module.running_mean = None
            module.running_var = None
            count += 1
    return count


class BatchNormAdapt(TTAMethod):
    """Test-batch statistics in every BatchNorm layer; no parameter is updated."""

    def configure(self) -> None:
        super().configure()
        if use_batch_statistics(self.model) == 0:
            raise ValueError(
                "method=bn needs BatchNorm layers, but the model has none; "
                "use a method that does not rely on BatchNorm (e.g. method=source)"
            )

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
