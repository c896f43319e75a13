"""Noise corruptions of Hendrycks & Dietterich (ICLR 2019), batched in torch.

From "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations"
(``make_cifar_c.py`` / ``make_imagenet_c.py``): every noise works on ``x / 255`` in float64,
clips to [0, 1] and truncates ``* 255`` to uint8. The originals draw from numpy's global RNG
without a seed, so only the distribution can be matched, not the pixels; these draws come from
the caller's ``torch.Generator`` instead, chosen for speed where the law stays the same:

* gaussian and speckle: float32 standard normals (``RandomSource.normal``), scaled and added
  in float64.
* shot: inputs are bytes, so ``x * lam`` takes 256 values; each has an alias table of its
  Poisson law (Walker 1977, built as Vose 1991), sampled with one float64 uniform per element.
  ``torch.poisson`` runs a scalar rejection loop per element and was the slowest corruption.
* impulse: one float32 uniform per element decides salt, pepper or neither (scikit-image's
  law for its two draws, up to the 2**-24 grid of the uniform).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from .ops import RandomSource, to_uint8, to_unit
from .registry import register


@register("gaussian_noise", random=True)
def gaussian_noise(images: torch.Tensor, std: float, rng: RandomSource) -> torch.Tensor:
    """Additive white noise: ``x + N(0, std**2)`` per pixel and channel."""
    x = to_unit(images)
    return to_uint8(x + rng.normal(x.shape, std=std))


@register("shot_noise", random=True)
def shot_noise(images: torch.Tensor, lam: float, rng: RandomSource) -> torch.Tensor:
    """Photon noise: ``np.uint8(clip(Poisson(x * lam) / lam, 0, 1) * 255)``, by alias tables."""
    accept, value, alias_value = _shot_tables(float(lam), images.device)
    m = value.numel()
    u = rng.uniform(images.shape, 0.0, float(m))
    bucket = u.to(torch.int64).clamp_(max=m - 1)
    cell = images.to(torch.int64).mul_(m).add_(bucket)
    keep = u.sub_(bucket) < accept.take(cell)
    return torch.where(keep, value.take(bucket), alias_value.take(cell))


@register("impulse_noise", random=True)
def impulse_noise(images: torch.Tensor, amount: float, rng: RandomSource) -> torch.Tensor:
    """Salt and pepper: ``skimage.util.random_noise(mode='s&p', amount)``.

    Since scikit-image PR #2223 (2016, before CIFAR-10-C) each element (pixel *and* channel) is
    flipped with probability ``amount``, to 1 (salt) or 0 (pepper) with probability 1/2 each.
    One uniform ``u`` per element gives that law (up to its 2**-24 grid): salt if
    ``u <= amount / 2``, pepper if ``amount / 2 < u <= amount``. Untouched bytes stay as they
    are (``x / 255 * 255`` truncates back to ``x`` for every byte).
    """
    u = rng.uniform(images.shape, 0.0, 1.0, draw=torch.float32)
    return torch.where(u <= amount / 2, 255, torch.where(u <= amount, 0, images)).to(torch.uint8)


@register("speckle_noise", random=True)
def speckle_noise(images: torch.Tensor, std: float, rng: RandomSource) -> torch.Tensor:
    """Multiplicative noise: ``x + x * N(0, std**2)``."""
    x = to_unit(images)
    return to_uint8(x + x * rng.normal(x.shape, std=std))


def poisson_support(lam: float) -> int:
    """Counts ``0 .. m - 1`` kept for rates up to ``lam``: the tail beyond holds < 1e-16."""
    return math.ceil(lam + 10 * math.sqrt(lam) + 10)


def poisson_pmf(rates: np.ndarray, m: int) -> np.ndarray:
    """``P(N = n)`` for ``N ~ Poisson(rate)``, rows = rates, ``n < m``, renormalised to sum 1."""
    n = np.arange(m)
    log_factorial = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, m)))])
    with np.errstate(divide="ignore", invalid="ignore"):
        pmf = np.exp(n * np.log(rates[:, None]) - rates[:, None] - log_factorial)
    pmf[rates == 0] = n == 0
    return pmf / pmf.sum(axis=1, keepdims=True)


def alias_table(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Vose's alias method for a pmf ``p`` of ``m`` cells.

    Sampling: cell ``j`` uniform on ``0..m-1``, then ``j`` with probability ``accept[j]``, else
    ``alias[j]``; that draws ``n`` with probability ``p[n]`` exactly (up to rounding).
    """
    m = len(p)
    scaled = (np.asarray(p, dtype=np.float64) * m).tolist()
    accept, alias = [1.0] * m, list(range(m))
    small = [j for j, q in enumerate(scaled) if q < 1.0]
    large = [j for j, q in enumerate(scaled) if q >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        accept[s], alias[s] = scaled[s], g
        scaled[g] = (scaled[g] + scaled[s]) - 1.0
        (small if scaled[g] < 1.0 else large).append(g)
    return np.array(accept), np.array(alias)


@functools.lru_cache(maxsize=32)
def _shot_tables_cpu(lam: float) -> tuple[torch.Tensor, ...]:
    """Per grey level ``r``, the alias table of ``Poisson(r / 255 * lam)``, flat (256 * m).

    Returns ``accept`` (float64, 256 * m), ``value`` (uint8, m: the output byte of count ``n``,
    ``to_uint8(n / lam)``) and ``alias_value`` (uint8, 256 * m: the byte of each cell's alias).
    """
    m = poisson_support(lam)
    rates = (torch.arange(256, dtype=torch.float64) / 255.0 * lam).numpy()  # as to_unit(x) * lam
    tables = [alias_table(row) for row in poisson_pmf(rates, m)]
    accept = torch.from_numpy(np.concatenate([a for a, _ in tables]))
    alias = torch.from_numpy(np.concatenate([j for _, j in tables]))
    value = to_uint8(torch.arange(m, dtype=torch.float64) / lam)
    return accept, value, value[alias]


@functools.lru_cache(maxsize=32)
def _shot_tables(lam: float, device: torch.device) -> tuple[torch.Tensor, ...]:
    """``_shot_tables_cpu(lam)`` on ``device`` (built once, copied per device)."""
    return tuple(t.to(device) for t in _shot_tables_cpu(lam))
