"""``source``: no adaptation step; the prediction is the model's output on the batch.

With the default ``norm=source`` this is the frozen source model (running BatchNorm statistics),
the lower bound every TTA table starts from (e.g. 43.5 % error for RobustBench's WRN-28-10 on
CIFAR-10-C at severity 5). With another norm it is that norm alone: ``method=bn`` is this class
with ``norm=bn``, and ``method=unmix`` this class with ``norm=unmix``.
"""

from __future__ import annotations

import torch

from ttabench.methods.base import TTAMethod


class Source(TTAMethod):
    """No parameter update: scores the model's forward pass (under whatever norm it carries)."""

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def adapt_again(self, x: torch.Tensor) -> None:
        """Nothing: a norm's statistics take each batch once."""
