"""``norm=bn``: test-batch statistics (TBN, BN-1, norm_test, "BN adapt").

Schneider et al., "Improving robustness against common corruptions by covariate shift
adaptation" (NeurIPS 2020); Nado et al., "Evaluating prediction-time batch normalization for
robustness under covariate shift" (2020). Every BatchNorm layer forgets its running statistics
and normalises with the current batch's mean and biased variance over (B, H, W), in train and
eval mode alike; nothing is kept between batches. Done as Tent's ``configure_model`` does it
(``track_running_stats=False``, ``running_mean = running_var = None``), so affine parameters
stay the model's own and gradient methods can train them. A prediction therefore depends on
which other samples share the batch: the weakness label-correlated streams expose.
"""

from __future__ import annotations

from torch import nn

from ttabench.norms.base import BATCHNORM_TYPES, Norm, require_batchnorm


class BatchStatsNorm(Norm):
    """Every BatchNorm layer (1d, 2d, 3d) normalises with the statistics of its input batch."""

    name = "bn"

    def apply(self, model: nn.Module) -> nn.Module:
        count = 0
        for module in model.modules():
            if isinstance(module, BATCHNORM_TYPES):
                module.track_running_stats = False
                module.running_mean = None
                module.running_var = None
                count += 1
        require_batchnorm(count, self.name)
        return model
