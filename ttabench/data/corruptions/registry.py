"""Name -> implementation registry of the corruptions of Hendrycks & Dietterich (ICLR 2019).

Adding a corruption of "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" is one decorated function in a family module (``noise``, ``blur``, ``weather``,
``digital``, ...) plus its row in ``tables.TABLES``; the tests are parametrised over this
registry. Corruptions that need an optional piece (frost: the texture photographs; spatter:
OpenCV) register a ``check`` that raises :class:`CorruptionUnavailableError` naming how to get
it, and a ``describe`` that tells the provenance record which piece was used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .ops import RandomSource
from .tables import ALL_CORRUPTIONS, TABLES

#: ``fn(images, params, rng)``: uint8 (B, 3, H, W) in, uint8 of the same shape out; ``params``
#: is the table entry of the requested profile and severity.
CorruptionFn = Callable[[torch.Tensor, Any, RandomSource], torch.Tensor]


class CorruptionUnavailableError(RuntimeError):
    """A registered corruption whose optional piece (textures, OpenCV) is not installed."""


@dataclass(frozen=True)
class Corruption:
    """A registered corruption.

    Attributes:
        name: Canonical name (``tables.ALL_CORRUPTIONS``).
        fn: The batched implementation.
        random: Whether its output depends on the RNG.
        check: Raises :class:`CorruptionUnavailableError` if an optional piece is missing.
        describe: Provenance of what it used (texture files, library version), as strings.
        whole_batch: ``corrupt`` hands it per-sample batches of up to ``WHOLE_BATCH_ROWS``
            images instead of cache-sized chunks, for work whose cost is per call, not per
            image (glass's index waves, fog's fractal levels, frost's texture lookup); it
            chunks its float work itself (``ops.per_chunk``).
    """

    name: str
    fn: CorruptionFn
    random: bool
    check: Callable[[], None] | None = None
    describe: Callable[[], dict[str, str]] | None = None
    whole_batch: bool = False


REGISTRY: dict[str, Corruption] = {}


def register(
    name: str,
    *,
    random: bool,
    check: Callable[[], None] | None = None,
    describe: Callable[[], dict[str, str]] | None = None,
    whole_batch: bool = False,
) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator registering ``fn`` under ``name``: ``@register("fog", random=True)``."""
    if name not in ALL_CORRUPTIONS or name not in TABLES:
        raise ValueError(f"{name!r} has no entry in tables.ALL_CORRUPTIONS / tables.TABLES")

    def wrap(fn: CorruptionFn) -> CorruptionFn:
        if name in REGISTRY:
            raise ValueError(f"corruption {name!r} registered twice")
        REGISTRY[name] = Corruption(name, fn, random, check, describe, whole_batch)
        return fn

    return wrap


def unavailable_reason(name: str) -> str | None:
    """Why ``name`` cannot run here (not implemented, or a missing optional piece), else None."""
    if name not in REGISTRY:
        return "not implemented"
    check = REGISTRY[name].check
    if check is not None:
        try:
            check()
        except CorruptionUnavailableError as exc:
            return str(exc)
    return None
