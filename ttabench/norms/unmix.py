"""``norm=unmix``: UnMix-TNS, un-mixing test-time normalisation statistics.

Tomar et al., "Un-Mixing Test-Time Normalization Statistics: Combatting Label Temporal
Correlation" (ICLR 2024), section 3 (Eqs. 5-13), faithful to the official
``tta_experiments/unmixtns.py`` (devavratTomar/unmixtns @ 8e12b9f); specs/normalization.md,
"unmix". Every BatchNorm2d keeps K statistics components (mu_k, var_k), initialised around the
source statistics (Eq. 5):

    K = 1: mu_1 = mu_s, var_1 = var_s;   K > 1: mu_k = mu_s + sqrt(alpha K / (K - 1)) sqrt(var_s)
    eps_k, eps_k ~ N(0, I), var_k = (1 - alpha) var_s   (uniform mixture keeps mu_s, var_s).

Forward, identical in train and eval mode, per sample b (instance stats m_b, v_b over H, W):
p_bk = softmax_k(cos(m_b, mu_k) / tau) (no gradient); mu'_bk = (1 - p_bk) mu_k + p_bk m_b,
var'_bk likewise; the sample is normalised with the uniform mixture's moments (law of total
variance) mu_b = mean_k mu'_bk, s2_b = mean_k var'_bk + mean_k mu'_bk^2 - mu_b^2; then every
component moves by lambda mean_b[p_bk (m_b - mu_k)] (and var_k by v_b), lambda = 1 - (1 - m)^
(B / bs_max). A sample's output never depends on the rest of its batch within a forward pass.

Implementation: the (B, K, C) tensors of the official code are never built. With mbar = mean_k
mu_k, a_k = mu_k - mbar and q_b = m_b - mbar, sums over k of p-polynomials times component
quantities are (B, K) @ (K, C) products:
    mu_b = mbar + (m_b - p mu) / K,   mean_k var' = vbar + (v_b - p var) / K,
    mean_k (mu' - mbar)^2 = [(1 - p)^2 a^2 + 2 q_b (p - p^2) a + q_b^2 sum_k p^2] / K,
    s2_b = mean_k var' + mean_k (mu' - mbar)^2 - (mu_b - mbar)^2;
centring at mbar keeps the variance subtraction well conditioned (same value as the official
formula, checked against it in tests/test_norms.py). The update is p^T @ m / B, also a product.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ttabench.norms.base import Norm, NormLayer, momentum_of, replace_batchnorm, require_batchnorm

BN1D_MODES = ("source", "unmix", "keep")


class UnMixTNS(NormLayer):
    """UnMix-TNS layer: K components (buffers ``component_mean``/``component_var``, (K, C)).

    Works on any input (B, C, *spatial) with at least one spatial/sequence axis: instance
    statistics are taken over all axes after the channel axis.
    """

    def __init__(
        self,
        bn: nn.modules.batchnorm._BatchNorm,
        num_components: int,
        alpha: float,
        tau: float,
        momentum: float,
        bs_max: int,
        batch_size: int | None,
        update_rate: float | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(bn)
        self.num_components, self.tau = num_components, tau
        self.momentum, self.bs_max, self.batch_size = momentum, bs_max, batch_size
        self.update_rate = update_rate
        mean, var = self.source_mean, self.source_var
        if num_components == 1:  # official: no noise, no shrink (alpha is set to 0)
            means, variances = mean[None].clone(), var[None].clone()
        else:  # Eq. 5; noise drawn on the CPU so a seed gives the same components on any device
            noise = torch.randn(num_components, len(mean), generator=generator)
            spread = math.sqrt(alpha * num_components / (num_components - 1))
            means = mean + spread * var.sqrt() * noise.to(mean)
            variances = ((1.0 - alpha) * var).expand(num_components, -1).clone()
        self.register_buffer("component_mean", means)
        self.register_buffer("component_var", variances)

    def rate(self, batch: int) -> float:
        """lambda = 1 - (1 - m)^(B / bs_max) (official), B the configured batch size or, with
        ``batch_size=None``, the size of the current batch; ``update_rate`` overrides it."""
        if self.update_rate is not None:
            return self.update_rate
        b = self.batch_size if self.batch_size is not None else batch
        return 1.0 - (1.0 - self.momentum) ** (b / self.bs_max)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            raise ValueError(
                f"UnMix-TNS needs instance statistics over spatial/sequence axes, got input of "
                f"shape {tuple(x.shape)}; use bn1d=source for BatchNorm1d on (B, C) features"
            )
        b, k = x.shape[0], self.num_components
        v, m = torch.var_mean(x, dim=tuple(range(2, x.dim())), correction=0)  # (B, C), with grad
        mu, var = self.component_mean, self.component_var
        with torch.no_grad():  # assignment (Eq. 7): cosine over channels, temperature tau
            sim = F.normalize(m, dim=1) @ F.normalize(mu, dim=1).T
            p = torch.softmax(sim / self.tau, dim=1)  # (B, K)
            p2 = p * p
            mbar, vbar = mu.mean(0), var.mean(0)
            a = mu - mbar
            # One batched product: p @ [mu | var], (1 - p)^2 @ a^2, (p - p^2) @ a, all (B, C).
            lhs = torch.stack((p, (1.0 - p).square(), p - p2))
            rhs = torch.stack((torch.cat((mu, var), 1), torch.cat((a * a, a), 1), a.repeat(1, 2)))
            prod = torch.bmm(lhs, rhs)
            c = m.shape[1]
            p_mu, p_var = prod[0, :, :c], prod[0, :, c:]
            sq_a, cross_a = prod[1, :, :c], prod[2, :, :c]
            sum_p2 = p2.sum(1, keepdim=True)
        q = m - mbar
        d = (m - p_mu) / k  # mu_b - mbar
        second = (sq_a + 2.0 * q * cross_a + q * q * sum_p2) / k  # mean_k (mu'_bk - mbar)^2
        sigma2 = vbar + (v - p_var) / k + second - d * d
        out = self.normalize(x, mbar + d, sigma2)
        if self.adapt:  # Eqs. 12-13, after normalising: mu_k += lam mean_b p_bk (m_b - mu_k)
            with torch.no_grad():
                lam = self.rate(b)
                keep = (1.0 - lam * p.mean(0)).unsqueeze(1)
                mu.mul_(keep).addmm_(p.T, m.detach(), alpha=lam / b)
                var.mul_(keep).addmm_(p.T, v.detach(), alpha=lam / b)
        return out

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, K={self.num_components}, tau={self.tau}, "
            f"momentum={self.momentum}, bs_max={self.bs_max}, batch_size={self.batch_size}"
        )


class SourceStatsNorm(NormLayer):
    """Normalises with the frozen source statistics (the official ``UnMixTNS1d``), keeping the
    affine parameters as trainable Parameters of a :class:`NormLayer`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.normalize(x, self.source_mean, self.source_var)


class UnMixNorm(Norm):
    """Swap every BatchNorm2d (and BatchNorm1d per ``bn1d``) for UnMix-TNS.

    Args:
        num_components: K (official 16; 128 for the paper's mixed-domain runs).
        alpha: initial spread of the components around the source statistics (official 0.5).
        tau: softmax temperature of the cosine assignment (official 0.07).
        bs_max: batch size at which lambda equals the BN momentum (official 64, ImageNet-C 16).
        batch_size: B in lambda; the stream's batch size (official ``TEST.BATCH_SIZE``); None
            uses each forward's actual batch size.
        momentum: m in lambda; None uses each layer's own BN momentum (official).
        update_rate: lambda itself, overriding the rule (None: the rule).
        bn1d: BatchNorm1d layers: ``source`` (official: frozen source statistics), ``unmix``
            (UnMix-TNS over the sequence axis, needs (B, C, L) inputs) or ``keep`` (untouched).
        seed: seed of the component noise (drawn layer by layer in model order); None draws
            from the global torch generator, as the official code does.
    """

    name = "unmix"

    def __init__(
        self,
        num_components: int = 16,
        alpha: float = 0.5,
        tau: float = 0.07,
        bs_max: int = 64,
        batch_size: int | None = 64,
        momentum: float | None = None,
        update_rate: float | None = None,
        bn1d: str = "source",
        seed: int | None = None,
    ) -> None:
        if num_components < 1:
            raise ValueError(f"norm=unmix needs num_components >= 1, got {num_components}")
        if bn1d not in BN1D_MODES:
            raise ValueError(f"norm=unmix: bn1d must be one of {BN1D_MODES}, got {bn1d!r}")
        self.num_components, self.alpha, self.tau = int(num_components), float(alpha), float(tau)
        self.bs_max, self.batch_size = int(bs_max), batch_size
        self.momentum, self.update_rate = momentum, update_rate
        self.bn1d, self.seed = bn1d, seed

    def _layer(self, bn: nn.Module, generator: torch.Generator | None) -> nn.Module:
        if isinstance(bn, nn.BatchNorm1d) and self.bn1d == "source":
            return SourceStatsNorm(bn)
        return UnMixTNS(
            bn,
            self.num_components,
            self.alpha,
            self.tau,
            momentum_of(bn, self.momentum, self.name),
            self.bs_max,
            self.batch_size,
            self.update_rate,
            generator,
        )

    def apply(self, model: nn.Module) -> nn.Module:
        generator = None if self.seed is None else torch.Generator().manual_seed(int(self.seed))
        types = (nn.BatchNorm2d,) if self.bn1d == "keep" else (nn.BatchNorm2d, nn.BatchNorm1d)
        count = replace_batchnorm(model, lambda bn: self._layer(bn, generator), types)
        require_batchnorm(count, self.name)
        return model
