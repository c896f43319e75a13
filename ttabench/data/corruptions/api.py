"""``corrupt``: the single entry point to the corruptions of Hendrycks & Dietterich (ICLR 2019).

"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" defines 15
common and 4 extra corruptions at 5 severities; ``corrupt`` applies one of them to a batch of
uint8 images on any device with the parameter table of a profile (``cifar`` = CIFAR-10-C,
``imagenet`` = ImageNet-C), drawing all randomness from ``torch.Generator``s: one per sample
(``sample_generators``) makes every image independent of the batch it is corrupted in.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Iterable, Sequence

import numpy as np
import torch

# Importing the family modules registers their corruptions.
from . import blur, digital, elastic, frost, noise, spatter, weather  # noqa: F401
from .ops import WHOLE_BATCH_ROWS, RandomSource, per_chunk
from .registry import REGISTRY
from .seeding import seed_states
from .tables import ALL_CORRUPTIONS, PROFILES, TABLES

Generators = torch.Generator | Sequence[torch.Generator] | None


def available_corruptions() -> tuple[str, ...]:
    """Names implemented here, in canonical order (common 15, then the extras).

    frost and spatter are implemented but need an optional piece (textures, OpenCV); see
    ``registry.unavailable_reason``.
    """
    return tuple(name for name in ALL_CORRUPTIONS if name in REGISTRY)


def sample_generators(
    seed: int, corruption: str, severity: int, indices: Iterable[int]
) -> list[torch.Generator]:
    """One CPU generator per sample, seeded by ``SeedSequence([seed, crc32(name), severity, i])``.

    The per-sample seeding of spec 6.2: passed to ``corrupt``, sample ``i``'s output depends on
    these four numbers only, not on batch size, order, worker count or subset.
    """
    indices = [int(i) for i in indices]
    entropy = (seed, zlib.crc32(corruption.encode()), severity)
    if all(0 <= i < 2**32 for i in indices):  # one entropy word each: hashed all at once
        states = seed_states(entropy, indices).tolist()
    else:
        states = [
            int(np.random.SeedSequence([*entropy, i]).generate_state(1, np.uint64)[0])
            for i in indices
        ]
    return [torch.Generator().manual_seed(state >> 1) for state in states]


def corruption_provenance(names: Iterable[str]) -> dict[str, str]:
    """What the corruptions ``names`` used beyond this code (frost textures, OpenCV, JPEG codec).

    Raises:
        CorruptionUnavailableError: one of them lacks its optional piece.
    """
    out: dict[str, str] = {}
    for name in names:
        corruption = REGISTRY.get(name)
        if corruption is not None and corruption.describe is not None:
            out.update(corruption.describe())
    return out


def corruption_fingerprint(name: str) -> str:
    """Short hash of ``corruption_provenance([name])`` ('' when it uses nothing external).

    Part of cache keys, so other frost textures or another OpenCV never serve stale images;
    where the textures were found is left out (the same bytes from another wheel or folder
    give the same images), their SHA-256 is in.
    """
    record = corruption_provenance([name])
    record.pop("frost_textures", None)
    if not record:
        return ""
    return hashlib.sha256(json.dumps(record, sort_keys=True).encode()).hexdigest()[:8]


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    generator: Generators = None,
    profile: str = "cifar",
) -> torch.Tensor:
    """Corrupt a batch of images as the CIFAR-10-C / ImageNet-C generator scripts do.

    Args:
        images: uint8 tensor (B, 3, H, W), RGB, on any device.
        name: corruption name, e.g. ``"gaussian_noise"`` (see ``available_corruptions()``).
        severity: 1..5.
        generator: source of every random number. A sequence of ``B`` generators (e.g.
            ``sample_generators``) gives image ``i`` its own generator: its output is then the
            same in any batch, order or batch size (the spec's per-sample seeding). One
            generator draws for the whole batch at once (same generator state, same output for
            the same batch). ``None`` uses torch's global RNG of ``images.device``. Tensors are
            drawn on the generators' device, then moved to ``images.device``.
        profile: parameter table, ``"cifar"`` (``make_cifar_c.py``, 32 px) or ``"imagenet"``
            (``make_imagenet_c.py``, 224 px). Other image sizes are accepted; the tables'
            parameters are then used unchanged (they are in pixels for blur, snow and elastic).

    Returns:
        uint8 tensor of the same shape on the same device. Like the originals, values are
        computed in float64 on ``x / 255`` (float32 where the scripts use it), clipped to
        [0, 1], scaled by 255 and truncated (``np.uint8``); pixelate and JPEG return the exact
        uint8 of Pillow.

    Raises:
        ValueError: unknown ``name`` or ``profile``, ``severity`` outside 1..5, bad images, or
            a generator sequence whose length is not ``B``.
        CorruptionUnavailableError: frost without its textures, spatter without OpenCV (the
            message says how to install them).
    """
    if name not in ALL_CORRUPTIONS:
        raise ValueError(
            f"unknown corruption {name!r}; valid names: {', '.join(ALL_CORRUPTIONS)} "
            f"(implemented: {', '.join(available_corruptions())})"
        )
    if name not in REGISTRY:
        raise NotImplementedError(f"corruption {name!r} is not implemented")
    if isinstance(severity, bool) or not isinstance(severity, int) or not 1 <= severity <= 5:
        raise ValueError(f"severity must be an int in 1..5, got {severity!r}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8:
        raise ValueError("images must be a uint8 torch.Tensor of shape (B, 3, H, W)")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    entry = REGISTRY[name]
    if entry.check is not None:
        entry.check()
    per_sample = generator is not None and not isinstance(generator, torch.Generator)
    if per_sample and len(generator) != images.shape[0]:
        raise ValueError(f"got {len(generator)} generators for {images.shape[0]} images")
    if images.shape[0] == 0:
        return images.clone()
    params = TABLES[name][profile][severity - 1]
    if per_sample:  # one generator per image: any slicing of the batch gives the same bytes
        return per_chunk(
            images,
            lambda rows: entry.fn(
                images[rows], params, RandomSource(generator[rows], images.device)
            ),
            WHOLE_BATCH_ROWS if entry.whole_batch else None,
        ).to(images.device)
    rng = RandomSource(generator, images.device, images.shape[0])
    return entry.fn(images, params, rng).to(images.device)
