"""``corrupt``: the single entry point to the corruptions of Hendrycks & Dietterich (ICLR 2019).

"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" defines 15
common and 4 extra corruptions at 5 severities; ``corrupt`` applies one of them to a batch of
uint8 images on any device with the parameter table of a profile (``cifar`` = CIFAR-10-C,
``imagenet`` = ImageNet-C), drawing all randomness from a ``torch.Generator``.
"""

from __future__ import annotations

import torch

# Importing the family modules registers their corruptions.
from . import blur, digital, elastic, noise, weather  # noqa: F401
from .ops import RandomSource
from .registry import REGISTRY, UNAVAILABLE
from .tables import ALL_CORRUPTIONS, PROFILES, TABLES


def available_corruptions() -> tuple[str, ...]:
    """Names implemented here, in canonical order (common 15, then the extras)."""
    return tuple(name for name in ALL_CORRUPTIONS if name in REGISTRY)


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    generator: torch.Generator | None = None,
    profile: str = "cifar",
) -> torch.Tensor:
    """Corrupt a batch of images as the CIFAR-10-C / ImageNet-C generator scripts do.

    Args:
        images: uint8 tensor (B, 3, H, W), RGB, on any device.
        name: corruption name, e.g. ``"gaussian_noise"`` (see ``available_corruptions()``).
        severity: 1..5.
        generator: source of every random number (tensors are drawn on its device, then moved
            to ``images.device``), so one generator state always gives the same output. ``None``
            uses torch's global RNG of ``images.device``.
        profile: parameter table, ``"cifar"`` (``make_cifar_c.py``, 32 px) or ``"imagenet"``
            (``make_imagenet_c.py``, 224 px). Other image sizes are accepted; the tables'
            parameters are then used unchanged (they are in pixels for blur, snow and elastic).

    Returns:
        uint8 tensor of the same shape on the same device. Like the originals, values are
        computed in float64 on ``x / 255`` (float32 where the scripts use it), clipped to
        [0, 1], scaled by 255 and truncated (``np.uint8``); pixelate and JPEG return the exact
        uint8 of Pillow.

    Raises:
        ValueError: unknown ``name`` or ``profile``, ``severity`` outside 1..5, or bad images.
        NotImplementedError: a canonical corruption that is not implemented here (frost,
            spatter), with the reason and what it would need.
    """
    if name not in ALL_CORRUPTIONS:
        raise ValueError(
            f"unknown corruption {name!r}; valid names: {', '.join(ALL_CORRUPTIONS)} "
            f"(implemented: {', '.join(available_corruptions())})"
        )
    if name not in REGISTRY:
        reason = UNAVAILABLE.get(name, "not implemented yet")
        raise NotImplementedError(f"corruption {name!r} is not available: {reason}")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise ValueError("images must be a uint8 torch.Tensor of shape (B, 3, H, W)")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    if images.shape[0] == 0:
        return images.clone()
    params = TABLES[name][profile][severity - 1]
    out = REGISTRY[name].fn(images, params, RandomSource(generator, images.device))
    return out.to(images.device)
