"""``method=tent``: entropy minimisation on the normalisation affine parameters.

Wang et al., "Tent: Fully Test-Time Adaptation by Entropy Minimization", ICLR 2021 (arXiv
2006.10726), Eq. 1 and Sec. 3; official code DequanWang/tent ``tent.py`` (specs/methods.md,
section 1). Per batch: z = f(x), L = mean_i H(softmax(z_i)), one optimizer step, return z
(weights from before the step, statistics of this batch). TENT trains BatchNorm2d affine
parameters; here every normalisation layer's (the Doebler/Marsden extension to LN/GN, and the
layers a ``norm`` swapped in). Official statistics are the test batch's: the YAML defaults to
``norm=bn``; any other norm can be chosen (``method=tent norm=unmix``).

The step has no host sync: the loss's finiteness stays on the device until the runner's sync.
"""

from __future__ import annotations

import torch
from torch import nn

from ttabench.methods.base import TTAMethod
from ttabench.methods.entropy import norm_affine, softmax_entropy


class Tent(TTAMethod):
    """TENT: one entropy-minimisation step per batch on norm-affine parameters."""

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return norm_affine(self.model, "tent")

    @torch.enable_grad()
    def forward_and_adapt(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        loss = softmax_entropy(logits).mean(0)
        self.backward(loss, x.shape[0])
        self.optimizer.step()
        self.optimizer.zero_grad()
        return logits.detach()
