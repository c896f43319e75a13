"""``method=eata`` and ``method=eta``: entropy minimisation on reliable, non-redundant samples,
plus (EATA) a Fisher-weighted anti-forgetting term.

Niu et al., "Efficient Test-Time Model Adaptation without Forgetting", ICML 2022 (arXiv
2204.02610): sample-efficient entropy minimisation, Eq. 3-8 (reliability S1: H < E0, Eq. 5;
redundancy S2: |cos(m, p)| < eps against the moving average m of selected predictions, Eq. 6-7;
weight exp(E0 - H), Eq. 8) and the anti-forgetting regulariser beta * sum F (theta -
theta0)^2, Eq. 9-10. Official code mr-eggplant/EATA ``eata.py``/``main.py`` and the
Doebler/Marsden ``methods/eata.py`` (specs/methods.md, section 2). ETA is EATA with beta = 0.

As officially: the forward runs on every sample and the filtered ones are left out of the loss;
no step (but zero_grad) when no sample survives both filters; m is None until the first batch
with a surviving sample and is cleared by ``reset`` (the Doebler reset; EATA's own keeps m).
The Fisher information F is the mean over batches of squared gradients of the cross-entropy with
the model's own predictions on ``fisher_size`` clean *source* samples (Doebler: the training
split; EATA: the ImageNet validation split), in batches of the stream's batch size, with the
model already configured (test-batch statistics), once, before the stream.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttabench.methods.base import TTAMethod, knob
from ttabench.methods.entropy import ln_c_fraction, norm_affine, softmax_entropy
from ttabench.norms.base import statistics_frozen


class EATA(TTAMethod):
    """EATA (``fisher_alpha > 0``) or ETA (``fisher_alpha = 0``).

    Args:
        e_margin: E0 as a fraction of ln C (official 0.4).
        d_margin: eps of the redundancy filter, in (0, 1] (CIFAR-10-C 0.4, CIFAR-100-C 0.1,
            ImageNet-C 0.05).
        fisher_alpha: beta of the anti-forgetting term (CIFAR 1, ImageNet-C 2000; 0 = ETA).
        fisher_size: clean source samples for the Fisher information (official 2000).
        ema: weight of the old m in m = ema m + (1 - ema) mean p (official 0.9).
    """

    def __init__(
        self,
        model: nn.Module,
        e_margin: float = 0.4,
        d_margin: float = 0.05,
        fisher_alpha: float = 2000.0,
        fisher_size: int = 2000,
        ema: float = 0.9,
        **base: Any,
    ) -> None:
        self.e_margin = ln_c_fraction(e_margin, "e_margin")
        self.d_margin = knob(d_margin, "d_margin", low=1e-12, high=1.0)  # a cosine bound
        self.fisher_alpha = knob(fisher_alpha, "fisher_alpha", low=0.0)
        self.fisher_size = knob(fisher_size, "fisher_size", int, low=1)
        self.ema = knob(ema, "ema", low=0.0, high=0.999999)
        super().__init__(model, **base)

    @property
    def e0(self) -> float:
        return self.e_margin * self.ln_classes

    def trainable(self) -> list[tuple[str, nn.Parameter]]:
        return norm_affine(self.model, "eata")

    def prepare(self) -> None:
        num_classes = self.context.num_classes
        self.register_buffer("probs_ema", torch.zeros(num_classes))  # m
        self.register_buffer("has_probs_ema", torch.zeros((), dtype=torch.bool))
        if self.fisher_alpha > 0:
            self._estimate_fisher()

    @torch.enable_grad()
    def forward_and_adapt(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.model(x)
        entropy = softmax_entropy(logits)
        reliable = torch.nonzero(entropy < self.e0).flatten()
        probs = logits[reliable].softmax(1)
        if self.has_probs_ema:
            cosine = F.cosine_similarity(self.probs_ema.unsqueeze(0), probs, dim=1)
            keep = torch.nonzero(cosine.abs() < self.d_margin).flatten()
            selected, probs = reliable[keep], probs[keep]
        else:
            selected = reliable
        with torch.no_grad():
            if len(selected):
                mean = probs.detach().mean(0)
                if self.has_probs_ema:
                    mean = self.ema * self.probs_ema + (1 - self.ema) * mean
                self.probs_ema.copy_(mean)
                self.has_probs_ema.fill_(True)
        chosen = entropy[selected]
        loss = (chosen * (1 / torch.exp(chosen.detach() - self.e0))).mean(0)  # official rounding
        if self.fisher_alpha > 0:
            loss = loss + self._forgetting()
        if len(selected):
            self.backward(loss, len(selected))
            self.optimizer.step()
        self.optimizer.zero_grad()
        return logits.detach()

    def _forgetting(self) -> torch.Tensor:
        """beta sum_k F_k (theta_k - theta0_k)^2 over the trained tensors (EATA Eq. 9)."""
        return sum(  # alpha inside the sum, in parameter order: the official rounding
            self.fisher_alpha
            * (getattr(self, f"fisher_{i}") * (p - getattr(self, f"anchor_{i}")) ** 2).sum()
            for i, p in enumerate(self.trained)
        )

    def _estimate_fisher(self) -> None:
        """Mean over batches of squared gradients of CE(z, argmax z) on clean source data."""
        if self.context.source_data is None:
            raise ValueError("method=eata needs clean source samples for its Fisher term")
        images, _ = self.context.source_data(self.fisher_size)
        device = next(self.model.parameters()).device
        params = self.trained
        sums = [torch.zeros_like(p) for p in params]
        batches = torch.split(images, max(1, int(self.context.batch_size)))
        with torch.enable_grad(), statistics_frozen(self.model):  # source data: no test stats
            for batch in batches:
                x = batch.to(device).float().div_(255)
                logits = self.model(x)
                F.cross_entropy(logits, logits.argmax(1)).backward()
                for total, p in zip(sums, params, strict=True):
                    total += p.grad.detach() ** 2
                    p.grad = None
        for i, (total, p) in enumerate(zip(sums, params, strict=True)):
            self.register_buffer(f"fisher_{i}", total / len(batches))
            self.register_buffer(f"anchor_{i}", p.detach().clone())  # theta0
