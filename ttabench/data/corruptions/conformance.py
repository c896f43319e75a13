"""Batched torch vs per-image reference on identical draws (Hendrycks & Dietterich, ICLR 2019).

The corruptions of "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" are random, and torch's RNG streams differ from numpy's, so conformance with the
original recipes (``reference.py``) is checked by drawing every random quantity once with numpy
and handing the *same* draws to both sides: the torch side through each corruption's
``*_apply`` / ``*_blend`` entry point (everything after the draws), the reference through its
``draws`` argument. Shared by ``tests/test_corruptions.py`` and ``scripts/bench_corruptions.py``
(the deviation table). The noises have no draws to share; they are compared in distribution.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from . import blur, elastic, frost, spatter, weather
from .api import corrupt
from .reference import REFERENCES
from .registry import REGISTRY
from .tables import TABLES

#: ``f(x_bchw_uint8, params, rng) -> (torch output, [per-image reference draws])``.
DrawsAdapter = Callable[[torch.Tensor, Any, np.random.Generator], tuple[torch.Tensor, list]]


def _motion(x: torch.Tensor, p: Any, rng: np.random.Generator) -> tuple[torch.Tensor, list]:
    angles = rng.uniform(-45, 45, len(x))
    return blur.magick_motion_blur(x, p[0], p[1], torch.from_numpy(angles)), list(angles)


def _glass(x: torch.Tensor, p: Any, rng: np.random.Generator) -> tuple[torch.Tensor, list]:
    b, _, h, w = x.shape
    steps = max(h - 2 * p[1], 0) * max(w - 2 * p[1], 0)
    offsets = rng.integers(-p[1], p[1], size=(p[2], steps, b, 2))
    out = blur.glass_apply(x, p, torch.from_numpy(offsets))
    return out, [offsets[:, :, i] for i in range(b)]


def _snow(x: torch.Tensor, p: Any, rng: np.random.Generator) -> tuple[torch.Tensor, list]:
    b, _, h, w = x.shape
    layer, angles = rng.normal(p[0], p[1], size=(b, h, w)), rng.uniform(-135, -45, b)
    out = weather.snow_blend(x, torch.from_numpy(layer), p, torch.from_numpy(angles))
    return out, [(layer[i], angles[i]) for i in range(b)]


def _elastic(x: torch.Tensor, p: Any, rng: np.random.Generator) -> tuple[torch.Tensor, list]:
    b, _, h, w = x.shape
    j = p[0] * p[1][2]
    jitter = rng.uniform(-j, j, (b, 3, 2)).astype(np.float32)
    fx, fy = rng.uniform(-1, 1, (b, h, w)), rng.uniform(-1, 1, (b, h, w))
    t = (torch.from_numpy(v) for v in (jitter, fx, fy))
    return elastic.elastic_apply(x, p, *t), [(jitter[i], fx[i], fy[i]) for i in range(b)]


def _fog(x: torch.Tensor, p: Any, rng: np.random.Generator) -> tuple[torch.Tensor, list]:
    b, _, h, w = x.shape
    record = []

    def draw(shape: tuple, lo: float, hi: float) -> torch.Tensor:
        record.append(rng.uniform(lo, hi, (b, *shape)))
        return torch.from_numpy(record[-1])

    plasma = weather.plasma_fractal(b, 1 << max(max(h, w) - 1, 1).bit_length(), p[1], draw)
    return weather.fog_blend(x, plasma, p[0]), [[u[i] for u in record] for i in range(b)]


def _frost(x: torch.Tensor, p: Any, rng: np.random.Generator) -> tuple[torch.Tensor, list]:
    b, _, h, w = x.shape
    _, sizes = frost.texture_pool(p[2], x.device)
    which = rng.integers(0, 5, b)
    starts = np.stack([rng.integers(0, sizes[k].cpu().numpy() - (h, w)) for k in which])
    out = frost.frost_apply(x, p, torch.from_numpy(which), torch.from_numpy(starts))
    return out, [(which[i], *starts[i]) for i in range(b)]


def _spatter(x: torch.Tensor, p: Any, rng: np.random.Generator) -> tuple[torch.Tensor, list]:
    b, _, h, w = x.shape
    layer = rng.normal(p[0], p[1], (b, h, w))
    return spatter.spatter_apply(x, p, torch.from_numpy(layer)), list(layer)


#: Random corruptions (other than the noises) -> their same-draws adapter.
DRAWS: dict[str, DrawsAdapter] = {
    "frost": _frost,
    "spatter": _spatter,
    "motion_blur": _motion,
    "glass_blur": _glass,
    "snow": _snow,
    "elastic_transform": _elastic,
    "fog": _fog,
}


def compare_with_reference(
    name: str, imgs: np.ndarray, profile: str, severity: int, seed: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(torch output, reference output) as HWC uint8 (N, H, W, 3) on the same inputs and draws.

    Args:
        name: A non-noise corruption (the noises share no draws; compare them in distribution).
        imgs: uint8 (N, H, W, 3) RGB images.
        profile: ``cifar`` or ``imagenet``.
        severity: 1..5.
        seed: numpy seed of the shared draws (default: ``severity``).
    """
    params = TABLES[name][profile][severity - 1]
    rng = np.random.default_rng(severity if seed is None else seed)
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    if REGISTRY[name].random:
        if name not in DRAWS:
            raise KeyError(f"no same-draws adapter for the random corruption {name!r}")
        out, draws = DRAWS[name](x, params, rng)
    else:
        out, draws = corrupt(x, name, severity, profile=profile), [None] * len(imgs)
    ref = [REFERENCES[name](im, params, rng, d) for im, d in zip(imgs, draws, strict=True)]
    return out.permute(0, 2, 3, 1).cpu().numpy(), np.stack(ref)
