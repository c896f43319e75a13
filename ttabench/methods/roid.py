"""``method=roid``: universal TTA by diversity/certainty weighting, weight ensembling and prior
correction.

Marsden, Döbler, Yang, "Universal Test-time Adaptation through Weight Ensembling, Diversity
Weighting, and Prior Correction", WACV 2024 (arXiv 2306.00650), section 3 (Eq. 2-9); the only
code is the Doebler/Marsden benchmark's ``methods/roid.py`` and ``utils/losses.py``
(specs/methods.md, section 9). Norm-affine parameters are trained (official statistics: the test
batch's, ``norm=bn``). Per batch, with z = f(x), p = softmax(z):

1. Weights (no gradient): diversity d_i = 1 - cos(pi_bar, p_i) and certainty c_i = -H(p_i),
   each min-max normalised over the batch; samples with d_i below the batch mean are dropped;
   w_i = exp(d_i c_i / T). Then pi_bar = 0.9 pi_bar + 0.1 mean_i p_i.
2. Loss: the soft likelihood ratio l_i = -sum_c q_c ln(q_c / (1 - q_c) + 1e-5), q = min(p, 0.99),
   plus the symmetric cross-entropy between f(A(x_kept)) (a separate forward of a ROID view of
   the kept sub-batch) and z_kept; both weighted by w_i, summed and divided by the configured
   batch size (the stream's, as officially: a short last batch weighs less).
3. Step, then weight ensembling theta = 0.99 theta + 0.01 theta_source (trained tensors).
4. Prior correction of the scored output: pi = mean_i p_i, s = max(1/B, 1/C) / max_c pi_c,
   output = z * (pi + s) / (1 + s C) (the code multiplies the logits).

Guard, where the official code returns NaN: when all d_i (or all c_i) are equal, e.g. a batch of
one, min-max normalisation gives 0/0; here the normalised values are 0 (no sample dropped,
weights 1). The augmented forward does not move a stateful norm's statistics.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttabench.methods.augment import CoTTAAugment
from ttabench.methods.base import TTAMethod, knob
from ttabench.methods.entropy import (
    ema_update,
    norm_affine,
    softmax_entropy,
    symmetric_cross_entropy,
)
from ttabench.norms.base import statistics_frozen


class ROID(TTAMethod):
    """ROID.

    Args:
        weighting: diversity and certainty weighting (official on).
        prior_correction: rescale the output by the smoothed batch prior (official on).
        consistency: the symmetric CE to an augmented view (official on).
        momentum_src: ensembling weight of the adapted parameters (official 0.99).
        momentum_probs: EMA weight of the class-probability average pi_bar (official 0.9).
        temperature: T of the weights (official 1/3).
    """

    def __init__(
        self,
        model: nn.Module,
        weighting: bool = True,
        prior_correction: bool = True,
        consistency: bool = True,
        momentum_src: float = 0.99,
        momentum_probs: float = 0.9,
        temperature: float = 1 / 3,
        **base: Any,
    ) -> None:
        self.weighting, self.prior_correction = bool(weighting), bool(prior_correction)
        self.consistency = bool(consistency)
        self.momentum_src = knob(momentum_src, "momentum_src", low=0.0, high=1.0)
        self.momentum_probs = knob(momentum_probs, "momentum_probs", low=0.0, high=1.0)
        self.temperature = knob(temperature, "temperature", low=1e-12)
        super().__init__(model, **base)

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return norm_affine(self.model, "roid")

    def prepare(self) -> None:
        num_classes = self.context.num_classes
        self.register_buffer("class_probs_ema", torch.full((num_classes,), 1 / num_classes))
        for i, param in enumerate(self.trained):
            self.register_buffer(f"source_{i}", param.detach().clone())
        self.augment = CoTTAAugment(self.random, padding_mode="reflect", blur_and_noise=False)

    @torch.enable_grad()
    def forward_and_adapt(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        probs = logits.softmax(1)
        weights, keep = self.sample_weights(logits)
        if self.weighting:
            with torch.no_grad():
                self.class_probs_ema.mul_(self.momentum_probs).add_(
                    probs.mean(0), alpha=1 - self.momentum_probs
                )
        kept = torch.nonzero(keep).flatten()
        per_sample = soft_likelihood_ratio(probs) * weights
        loss = per_sample[kept].sum() / self.context.batch_size
        if self.consistency:
            with statistics_frozen(self.model):
                augmented = self.model(self.augment(x[kept]))
            consistency = symmetric_cross_entropy(augmented, logits[kept]) * weights[kept]
            loss = loss + consistency.sum() / self.context.batch_size
        self.backward(loss, len(kept) * (2 if self.consistency else 1))  # kept + their views
        self.optimizer.step()
        self.optimizer.zero_grad()
        sources = [getattr(self, f"source_{i}") for i in range(len(self.trained))]
        ema_update(self.trained, sources, self.momentum_src)
        output = logits.detach()
        if self.prior_correction:
            output = output * smoothed_prior(probs.detach())
        return output

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The network's logits times the batch's smoothed prior, as ``forward`` outputs."""
        logits = self.plain_forward(x)
        if self.prior_correction:
            logits = logits * smoothed_prior(logits.softmax(1))
        return logits

    @torch.no_grad()
    def sample_weights(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(w_i, kept_i): w_i = exp(d_i c_i / T), 0 where d_i < mean d (all ones without
        weighting); d and c min-max normalised diversity and certainty."""
        if not self.weighting:
            ones = torch.ones(logits.shape[0], device=logits.device)
            return ones, ones.bool()
        probs = logits.softmax(1)
        diversity = _min_max(1 - F.cosine_similarity(self.class_probs_ema[None], probs))
        keep = ~(diversity < diversity.mean())
        certainty = _min_max(-softmax_entropy(logits))
        return torch.exp(diversity * certainty / self.temperature) * keep, keep


def soft_likelihood_ratio(
    probs: torch.Tensor, clip: float = 0.99, eps: float = 1e-5
) -> torch.Tensor:
    """-sum_c q_c ln(q_c / (1 - q_c) + eps), q = min(p, clip), per row (ROID Eq. 5)."""
    q = probs.clamp(max=clip)
    return -(q * torch.log(q / (1 - q) + eps)).sum(1)


def smoothed_prior(probs: torch.Tensor) -> torch.Tensor:
    """(pi + s) / (1 + s C), pi = mean_i p_i, s = max(1/B, 1/C) / max_c pi_c (ROID Eq. 9)."""
    batch, num_classes = probs.shape
    prior = probs.mean(0)
    smooth = max(1 / batch, 1 / num_classes) / prior.max()
    return (prior + smooth) / (1 + smooth * num_classes)


def _min_max(values: torch.Tensor) -> torch.Tensor:
    """(v - min) / (max - min), 0 where max = min (the official code divides by zero)."""
    span = values.max() - values.min()
    return torch.where(span > 0, (values - values.min()) / span, torch.zeros_like(values))
