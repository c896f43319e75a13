"""The interface every test-time adaptation method implements.

Shape after the Doebler/Marsden benchmark's ``TTAMethod`` (``forward``, ``reset``): the runner
calls ``method(x)`` once per test batch and scores the returned logits. What counts as the
prediction is fixed by each method's paper and stated in its docstring; for most methods it is
the forward pass that also produces the adaptation loss (weights from before this batch's
update, normalisation statistics of this batch), i.e. predict and adapt on the same batch.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class TTAMethod(nn.Module):
    """Wraps a source model; ``forward`` predicts a batch and adapts on it; ``reset`` undoes
    everything learned since construction (the runner resets before each new domain under the
    ``single`` schedule, once before the stream otherwise).

    Subclasses prepare the model in ``configure`` (modes, swapped layers, trainable parameters)
    and keep any extra state as modules, parameters or buffers so that ``reset`` restores it.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.configure()
        self._initial_state = copy.deepcopy(self.state_dict())

    def configure(self) -> None:
        """Prepare ``self.model`` for test-time use (default: frozen, eval mode)."""
        self.model.eval()
        self.model.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return logits for images ``x`` (floats in [0, 1], shape (B, 3, H, W))."""
        raise NotImplementedError

    def reset(self) -> None:
        """Restore the state captured right after ``configure``."""
        self.load_state_dict(self._initial_state)
