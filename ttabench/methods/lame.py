"""``method=lame``: Laplacian-regularised maximum-likelihood estimation of the batch's labels.

Boudiaf et al., "Parameter-free Online Test-time Adaptation", CVPR 2022 (arXiv 2201.05718),
Eq. 4-7: the model never changes; its probabilities p are refined on each batch by minimising
the concave-convex energy sum_i KL(y_i || p_i) - sum_ij w_ij y_i^T y_j over the simplex with
the bound-optimisation update y_i <- softmax(ln p_i + sum_j w_ij y_j) (Eq. 7). Official code
fiveai/LAME ``src/adaptation/lame.py`` (specs/methods.md, section 4): features are the
penultimate layer's, L2-normalised; affinity ``rbf`` (sigma = mean distance to the k-th
nearest point, counting the point itself), ``knn`` (k nearest, self excluded) or ``linear``;
up to 100 iterations, stopped after the third once the energy changes by <= 1e-8 relative.

The scored output is the refined probability matrix Y (its argmax), as officially. The model
runs in eval mode under the chosen norm (official: source statistics, ``norm=source``).
Guard, where the official code returns NaN: an ``rbf`` kernel with sigma = 0 (batch size 1, or
k = 1) has no neighbour information and is taken as W = 0, so Y = p.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ttabench.methods.base import TTAMethod, knob
from ttabench.models.features import classifier_of, features_and_logits
from ttabench.norms.base import statistics_frozen

AFFINITIES = ("rbf", "knn", "linear")


class LAME(TTAMethod):
    """LAME: output correction, no parameter update.

    Args:
        affinity: ``rbf`` (official default), ``knn`` or ``linear``.
        knn: k of the kNN graph and of the rbf bandwidth (official 5).
        force_symmetry: use (W + W^T) / 2 (official off).
        max_steps: bound-optimisation iterations (official 100).
    """

    def __init__(
        self,
        model: nn.Module,
        affinity: str = "rbf",
        knn: int = 5,
        force_symmetry: bool = False,
        max_steps: int = 100,
        **base: Any,
    ) -> None:
        if affinity not in AFFINITIES:
            raise ValueError(
                f"method.affinity={affinity!r} is unknown; valid: {', '.join(AFFINITIES)}"
            )
        self.affinity, self.knn = affinity, knob(knn, "knn", int, low=1)
        self.force_symmetry = bool(force_symmetry)
        self.max_steps = knob(max_steps, "max_steps", int, low=1)
        super().__init__(model, **base)
        self.classifier = [classifier_of(self.model)]  # a list: not a submodule of the method

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features, logits = features_and_logits(self.model, x, self.classifier[0])
        unary = -torch.log(logits.softmax(1) + 1e-10)
        kernel = self.kernel(F.normalize(features, dim=1))
        if self.force_symmetry:
            kernel = (kernel + kernel.t()) / 2
        return laplacian_optimization(unary, kernel, self.max_steps)

    def adapt_again(self, x: torch.Tensor) -> None:
        """Nothing: LAME learns nothing across steps or batches."""

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """LAME's output (it learns nothing; the norm's statistics are not moved)."""
        with statistics_frozen(self.model):
            return self(x)

    def log_probabilities(self, outputs: torch.Tensor) -> torch.Tensor:
        """LAME returns the assignment Y (probabilities), not logits."""
        return outputs.clamp_min(1e-12).log().log_softmax(dim=1)

    def kernel(self, feats: torch.Tensor) -> torch.Tensor:
        """The affinity matrix W (B x B) of L2-normalised features."""
        if self.affinity == "linear":
            return feats @ feats.t()
        n = feats.shape[0]
        # Exact distances (the official norm of differences): cdist's matrix-product path
        # leaves self-distances of ~1e-3, which would break the sigma = 0 guard and kNN.
        dist = torch.cdist(feats, feats, compute_mode="donot_use_mm_for_euclid_dist")
        if self.affinity == "knn":
            nearest = dist.topk(min(self.knn + 1, n), dim=1, largest=False).indices[:, 1:]
            return torch.zeros_like(dist).scatter_(1, nearest, 1.0)
        kth = dist.topk(min(self.knn, n), dim=1, largest=False).values[:, -1]
        sigma = kth.mean()
        rbf = torch.exp(-(dist**2) / (2 * sigma**2))
        return torch.where(sigma > 0, rbf, torch.zeros_like(rbf))


def laplacian_optimization(
    unary: torch.Tensor, kernel: torch.Tensor, max_steps: int = 100
) -> torch.Tensor:
    """Bound optimisation of LAME's energy (lambda = 1); returns Y (B x C, rows on the simplex).

    Y0 = softmax(-a); then Y = softmax(-a + W Y), energy E = sum[a Y - (W Y) Y + Y ln Y], stop
    after iteration i > 1 once |E - E_prev| <= 1e-8 |E_prev| (one host sync per iteration, as
    officially)."""
    y = (-unary).softmax(-1)
    previous = float("inf")
    for i in range(max_steps):
        pairwise = kernel @ y
        y = (pairwise - unary).softmax(-1)
        energy = float((unary * y - pairwise * y + y * torch.log(y.clamp_min(1e-20))).sum())
        if i > 1 and abs(energy - previous) <= 1e-8 * abs(previous):
            break
        previous = energy
    return y
