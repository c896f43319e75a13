"""Name -> implementation registry of the corruptions of Hendrycks & Dietterich (ICLR 2019).

Adding a corruption of "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" is one decorated function in a family module (``noise``, ``blur``, ``weather``,
``digital``) plus its row in ``tables.TABLES``; the tests are parametrised over this registry.
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


@dataclass(frozen=True)
class Corruption:
    """A registered corruption: its function and whether its output depends on the RNG."""

    name: str
    fn: CorruptionFn
    random: bool


REGISTRY: dict[str, Corruption] = {}

#: Canonical corruptions deliberately not implemented, with what it would take.
UNAVAILABLE: dict[str, str] = {
    "frost": (
        "frost blends crops of six frost photographs (frost1.png .. frost6.jpg) shipped with "
        "hendrycks/robustness and imagecorruptions without any licence of their own, so they are "
        "never vendored here; implementing it needs the textures at run time (from an installed "
        "imagecorruptions / imagecorruptions-imaug wheel or a user directory) - not done yet"
    ),
    "spatter": (
        "spatter needs OpenCV's Canny edges, chamfer distanceTransform, equalizeHist and a "
        "saturating uint8 filter2D, which have no faithful torch equivalent; it would need a CPU "
        "reference backend built on opencv-python-headless (not a dependency)"
    ),
}


def register(name: str, *, random: bool) -> Callable[[CorruptionFn], CorruptionFn]:
    """Decorator registering ``fn`` under ``name``: ``@register("fog", random=True)``."""
    if name not in ALL_CORRUPTIONS or name not in TABLES:
        raise ValueError(f"{name!r} has no entry in tables.ALL_CORRUPTIONS / tables.TABLES")

    def wrap(fn: CorruptionFn) -> CorruptionFn:
        if name in REGISTRY:
            raise ValueError(f"corruption {name!r} registered twice")
        REGISTRY[name] = Corruption(name, fn, random)
        return fn

    return wrap
