"""Noise corruptions of Hendrycks & Dietterich (ICLR 2019), batched in torch.

From "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations"
(``make_cifar_c.py`` / ``make_imagenet_c.py``): every noise works on ``x / 255`` in float64,
clips to [0, 1] and truncates ``* 255`` to uint8. The originals draw from numpy's global RNG
without a seed, so only the distribution can be matched, not the pixels; these draws come from
the caller's ``torch.Generator`` instead.
"""

from __future__ import annotations

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
    """Photon noise: ``Poisson(x * lam) / lam`` (``torch.poisson`` for ``np.random.poisson``)."""
    x = to_unit(images)
    return to_uint8(rng.poisson(x * lam) / lam)


@register("impulse_noise", random=True)
def impulse_noise(images: torch.Tensor, amount: float, rng: RandomSource) -> torch.Tensor:
    """Salt and pepper: ``skimage.util.random_noise(mode='s&p', amount)``.

    Since scikit-image PR #2223 (2016, before CIFAR-10-C) each element (pixel *and* channel) is
    flipped with probability ``amount``, to 1 (salt) or 0 (pepper) with probability 1/2 each.
    """
    x = to_unit(images)
    flipped = rng.uniform(x.shape, 0.0, 1.0) <= amount
    salted = rng.uniform(x.shape, 0.0, 1.0) <= 0.5
    x = torch.where(flipped & salted, 1.0, torch.where(flipped, 0.0, x))
    return to_uint8(x)


@register("speckle_noise", random=True)
def speckle_noise(images: torch.Tensor, std: float, rng: RandomSource) -> torch.Tensor:
    """Multiplicative noise: ``x + x * N(0, std**2)``."""
    x = to_unit(images)
    return to_uint8(x + x * rng.normal(x.shape, std=std))
