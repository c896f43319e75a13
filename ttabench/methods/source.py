"""``source``: the unadapted source model (running BatchNorm statistics, eval mode).

The lower bound every TTA table starts from (e.g. 43.5 % error for RobustBench's WRN-28-10 on
CIFAR-10-C at severity 5; Croce et al., RobustBench, NeurIPS 2021 Datasets and Benchmarks).
"""

from __future__ import annotations

import torch

from ttabench.methods.base import TTAMethod


class Source(TTAMethod):
    """No adaptation: the prediction is the frozen model's output on the batch."""

    @torch.inference_mode()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
