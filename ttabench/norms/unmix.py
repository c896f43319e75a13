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

Implementation (vectorised, no loop over K or samples, no host synchronisation): the (B, K, C)
tensors of the official code are never built. With mbar = mean_k mu_k, a_k = mu_k - mbar and
q_b = m_b - mbar, every sum over k of a polynomial in p times a component quantity is a
(B, K) @ (K, C) product (p @ [mu | var | a^2], p^2 @ [a^2 | a]):
    mu_b = mbar + (m_b - p mu) / K,   mean_k var' = vbar + (v_b - p var) / K,
    mean_k (mu' - mbar)^2 = [(1 - p)^2 a^2 + 2 q_b (p - p^2) a + q_b^2 sum_k p^2] / K,
    s2_b = mean_k var' + mean_k (mu' - mbar)^2 - (mu_b - mbar)^2 = v_b / K + G0 + q_b (G1 + q_b G2)
with G0, G1, G2 free of gradient; centring at mbar keeps the subtraction well conditioned. The
update is p^T @ [m | v] / B into one (K, 2C) buffer. Equal to the official formulas up to float
rounding (checked against a (B, K, C) transcription in tests/test_norms.py).

Deliberate deviations from the official code (none changes the maths):
- instance statistics by shifted sums (``instance_stats``), not ``torch.var``'s Welford kernel,
  and the output by the eval-mode BatchNorm kernel over a (1, B * C, H, W) view: both several
  times faster on CPU; rounding differs at the 1e-6 level.
- components live in one buffer ``components`` (state-dict key) instead of
  ``running_means_mat``/``running_vars_mat``; the source statistics are ``source_mean/var``.
- the noise comes from a generator seeded by ``seed``, drawn for the swapped layers in model
  order; the official code draws from the global generator (also for BatchNorm1d layers, which
  then ignore it), so the same seed does not give bit-identical components.
- ``bn1d`` offers ``unmix`` (over the length axis of (B, C, L) inputs) and ``keep`` besides the
  official ``source``; ``batch_size=None`` (lambda from each actual batch) and ``update_rate``
  are additions; the defaults are the official behaviour (lambda from the configured batch size,
  also for a last, smaller batch). BatchNorm3d layers are left alone, as officially.
- the variance cross term the official code has commented out ("try uncommenting") is not
  offered.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ttabench.norms.base import (
    Norm,
    NormLayer,
    instance_stats,
    momentum_of,
    replace_batchnorm,
    require_batchnorm,
)

BN1D_MODES = ("source", "unmix", "keep")


class UnMixTNS(NormLayer):
    """UnMix-TNS layer with K components, kept in one (K, 2C) buffer ``components`` (means, then
    variances; views ``component_mean``/``component_var``) so one product updates both.

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
            means, variances = mean[None], var[None]
        else:  # Eq. 5; noise drawn on the CPU so a seed gives the same components on any device
            noise = torch.randn(num_components, len(mean), generator=generator).to(mean)
            spread = math.sqrt(alpha * num_components / (num_components - 1))
            means = mean + spread * var.sqrt() * noise
            variances = ((1.0 - alpha) * var).expand(num_components, -1)
        self.register_buffer("components", torch.cat((means, variances), 1).contiguous())

    @property
    def component_mean(self) -> torch.Tensor:
        """mu_k, shape (K, C) (a view of ``components``)."""
        return self.components[:, : self.num_features]

    @property
    def component_var(self) -> torch.Tensor:
        """var_k, shape (K, C) (a view of ``components``)."""
        return self.components[:, self.num_features :]

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
        b, c, k = x.shape[0], self.num_features, self.num_components
        m, v = instance_stats(x)  # (B, C) each, with gradient
        with torch.no_grad():
            mu, var = self.component_mean, self.component_var
            # Assignment (Eq. 7): p = softmax_k(cos(m_b, mu_k) / tau); 1/tau folded into mu.
            mu_dir = mu / (mu.norm(dim=1, keepdim=True).clamp_min(1e-12) * self.tau)
            m_dir = m / m.norm(dim=1, keepdim=True).clamp_min(1e-12)
            p = torch.softmax(m_dir @ mu_dir.T, dim=1)  # (B, K)
            p2 = p * p
            mbar = mu.mean(0)
            a = mu - mbar
            a2 = a * a
            # Sums over k as products (module docstring): p @ [mu | var | a^2], p^2 @ [a^2 | a].
            pm = p @ torch.cat((self.components, a2), 1)
            p_mu, p_var, p_a2 = pm[:, :c], pm[:, c : 2 * c], pm[:, 2 * c :]
            p2m = p2 @ torch.cat((a2, a), 1)
            p_a = p_mu - mbar
            # sigma2_b = v_b / K + G0 + q (G1 + q G2), q = m_b - mbar, all G without gradient:
            # mean_k var' = vbar + (v - p var) / K, mean_k (mu' - mbar)^2 = [sum_k (1 - p)^2 a^2
            # + 2 q (p - p^2) a + q^2 sum_k p^2] / K, (mu_b - mbar)^2 = (q - p a)^2 / K^2, so
            # G0 = [sum_k (var + a^2) - p var - 2 p a^2 + p^2 a^2] / K - (p a)^2 / K^2,
            # G1 = 2 / K [(1 + 1 / K) p a - p^2 a], G2 = (sum_k p^2 - 1 / K) / K.
            g0 = (p2m[:, :c] - p_var).sub_(p_a2, alpha=2.0).add_((var + a2).sum(0)).div_(k)
            g0.addcmul_(p_a, p_a, value=-1.0 / k**2)
            g1 = torch.add(p_a, p2m[:, c:], alpha=-k / (k + 1.0)).mul_(2.0 * (k + 1.0) / k**2)
            g2 = p2.sum(1, keepdim=True).sub_(1.0 / k).div_(k)
            offset = torch.add(mbar, p_mu, alpha=-1.0 / k)  # mu_b = offset + m_b / K
        q = m - mbar
        sigma2 = torch.add(torch.addcmul(g0, q, torch.addcmul(g1, q, g2)), v, alpha=1.0 / k)
        out = self.normalize(x, torch.add(offset, m, alpha=1.0 / k), sigma2)
        if self.adapt:  # Eqs. 12-13, after normalising: mu_k += lam mean_b p_bk (m_b - mu_k)
            with torch.no_grad():
                lam = self.rate(b)
                self.components.mul_(1.0 - lam * p.mean(0, keepdim=True).T)
                self.components.addmm_(p.T, torch.cat((m, v), 1), alpha=lam / b)
        return out

    @property
    def per_sample(self) -> bool:  # instance statistics and components, updated after output
        return True

    def extra_repr(self) -> str:
        return (
            f"{super().extra_repr()}, K={self.num_components}, tau={self.tau}, "
            f"momentum={self.momentum}, bs_max={self.bs_max}, batch_size={self.batch_size}"
        )


class SourceStatsNorm(NormLayer):
    """Normalises with the frozen source statistics (the official ``UnMixTNS1d``), keeping the
    affine parameters as trainable Parameters of a :class:`NormLayer`."""

    per_sample = True

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
