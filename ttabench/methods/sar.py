"""``method=sar``: sharpness-aware, reliable entropy minimisation with model recovery.

Niu et al., "Towards Stable Test-Time Adaptation in Dynamic Wild World", ICLR 2023
(openreview g2YraF75Tj): reliable entropy (S1: H < E0, E0 = 0.4 ln C, Eq. 2), its
sharpness-aware minimisation (SAM, Foret et al. 2021; Eq. 3-5) and the recovery scheme (reset
to the source model when the moving average e of the entropy loss falls below e_m = 0.2,
Sec. 4). Official code mr-eggplant/SAR ``sar.py``, ``sam.py`` (specs/methods.md, section 3).

Per batch: z = f(x); L1 = mean_{S1} H; backward; perturb the trained weights by
rho g / ||g||; z' = f(x) (the whole batch again); S2 = {i in S1 : H(p'_i) < E0};
L2 = mean_{S2} H(p'); e = L2 (first) else 0.9 e + 0.1 L2, when S2 is non-empty; backward L2;
restore the weights and step the base optimizer (SGD, momentum 0.9) with these gradients;
recover if e < e_m. Returns z. Trained: affine of BatchNorm2d/LayerNorm/GroupNorm outside
ResNet ``layer4`` and ViT ``blocks.9-11``/``norm`` (the CIFAR nets have no ``layer4``).

As officially, an empty S1 or S2 gives zero gradients and the base optimizer still steps (its
momentum moves the weights). Recovery (``recovery``): ``fresh`` (default) restores the source
weights, a fresh optimizer and e = None, as the Doebler benchmark does and as the authors agree
it should be (SAR issue #4); ``official`` reproduces the official script, which restores the
weights only: its ``reset`` reloads the SAM wrapper's state, not the base SGD's momentum
buffers, and stores e again after the reset, so further recoveries can follow at once.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from ttabench.methods.base import TTAMethod, knob
from ttabench.methods.entropy import (
    ln_c_fraction,
    name_patterns,
    norm_affine,
    sam_ascent,
    softmax_entropy,
)
from ttabench.norms.base import statistics_frozen

log = logging.getLogger(__name__)

#: module names SAR leaves frozen (official ``collect_params``; ``norm.`` also matches ``norm``).
SAR_FROZEN = ("layer4", "blocks.9", "blocks.10", "blocks.11", "norm.")
RECOVERIES = ("fresh", "official")


class SAR(TTAMethod):
    """SAR with SAM around the configured base optimizer.

    Args:
        e_margin: E0 as a fraction of ln C (official 0.4).
        rho: SAM neighbourhood radius (official 0.05).
        reset_constant: e_m, the recovery threshold on the loss EMA (official 0.2).
        ema: weight of the old e in the moving average (official 0.9).
        recovery: ``fresh`` (weights, optimizer and e reset) or ``official`` (weights only).
        frozen: module-name patterns whose affine parameters stay frozen.
    """

    state_attributes = ("loss_ema",)

    def __init__(
        self,
        model: nn.Module,
        e_margin: float = 0.4,
        rho: float = 0.05,
        reset_constant: float = 0.2,
        ema: float = 0.9,
        recovery: str = "fresh",
        frozen: tuple[str, ...] = SAR_FROZEN,
        **base: Any,
    ) -> None:
        self.e_margin = ln_c_fraction(e_margin, "e_margin")
        self.rho = knob(rho, "rho", low=0.0)
        self.reset_constant = knob(reset_constant, "reset_constant", low=0.0)
        self.ema = knob(ema, "ema", low=0.0, high=0.999999)
        if recovery not in RECOVERIES:
            raise ValueError(f"method.recovery={recovery!r}; valid: {', '.join(RECOVERIES)}")
        self.recovery = recovery
        self.frozen = name_patterns(frozen)
        self.loss_ema: float | None = None
        super().__init__(model, **base)

    @property
    def e0(self) -> float:
        return self.e_margin * self.ln_classes

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return norm_affine(self.model, "sar", self.frozen, bn2d_ln_gn_only=True)

    def reset_state(self) -> None:
        self.loss_ema = None

    @torch.enable_grad()
    def forward_and_adapt(self, x: torch.Tensor) -> torch.Tensor:
        params = self.trained
        self.optimizer.zero_grad()
        logits = self.model(x)
        entropy = softmax_entropy(logits)
        reliable = torch.nonzero(entropy < self.e0).flatten()
        self.backward(_mean_or_zero(entropy[reliable]), len(reliable))
        saved = sam_ascent(params, self.rho, self.optimizer)
        with statistics_frozen(self.model):  # the same batch again: no second stats update
            entropy2 = softmax_entropy(self.model(x))[reliable]
        kept = entropy2[entropy2 < self.e0]
        loss2 = _mean_or_zero(kept)
        if len(kept):
            value = float(loss2.detach())
            self.loss_ema = (
                value
                if self.loss_ema is None
                else (self.ema * self.loss_ema + (1 - self.ema) * value)
            )
        self.backward(loss2, len(kept))
        with torch.no_grad():
            for p, old in zip(params, saved, strict=True):
                p.copy_(old)
        self.optimizer.step()
        self.optimizer.zero_grad()
        if self.loss_ema is not None and self.loss_ema < self.reset_constant:
            self._recover()
        return logits.detach()

    def _recover(self) -> None:
        """Back to the source weights (SAR Sec. 4, model recovery); see ``recovery``."""
        log.debug("sar: loss EMA %.4f < %.2f: recovering", self.loss_ema, self.reset_constant)
        self.recoveries += 1
        if self.recovery == "official":
            self.load_state_dict(self._initial_state)
        else:
            self.reset()


def _mean_or_zero(values: torch.Tensor) -> torch.Tensor:
    """Mean of a selection; an empty one gives a zero loss with zero gradients (the official
    NaN mean back-propagates zeros too, without a NaN to report)."""
    return values.mean(0) if values.numel() else values.sum()
