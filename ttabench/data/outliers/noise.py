"""``noise``: STAMP's Gaussian-noise outlier set (``src/data/Gaussian.py``, ``noise_cifar`` /
``noise_imagenet`` in ``src/data/data.py``).

``uint8(clip(randn(n, H, W, 3) + 0.5, 0, 1) * 255)`` from ``numpy.random.RandomState(1)``: n =
10,000 at CIFAR size, 12,500 at ImageNet size; the values are truncated, not rounded, as
officially. Not corrupted: the same images under every corruption (the official code loads one
set for all domains). Drawn in chunks of the same generator (legacy ``randn`` continues one
normal sequence across calls, so chunks equal one call) and kept in memory up to the largest
index asked for, so a prefix of a large set costs only its own size.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ttabench.data.base import checked_indices
from ttabench.data.outliers import image_size
from ttabench.domains import Domain

SEED = 1
_CHUNK = 256


class GaussianNoise:
    """The noise set at image size ``size`` (H, W)."""

    def __init__(self, size: tuple[int, int], n: int | None = None, name: str = "noise") -> None:
        self.name, self.size = name, (int(size[0]), int(size[1]))
        self.n = int(n) if n is not None else (12_500 if max(self.size) > 64 else 10_000)
        self._rng = np.random.RandomState(SEED)
        self._made: list[np.ndarray] = []
        self._count = 0

    def labels(self, domain: Domain) -> np.ndarray:
        return np.full(self.n, -1, dtype=np.int64)

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        indices = checked_indices(indices, self.n)
        if len(indices):
            self._draw_until(int(indices.max()) + 1)
        made = np.concatenate(self._made) if len(self._made) > 1 else self._made[0]
        self._made = [made]
        return torch.from_numpy(np.ascontiguousarray(made[indices].transpose(0, 3, 1, 2)))

    def provenance(self) -> dict[str, str]:
        h, w = self.size
        return {"source": "noise", "seed": str(SEED), "n": str(self.n), "size": f"{h}x{w}"}

    def _draw_until(self, count: int) -> None:
        h, w = self.size
        while self._count < count:
            k = min(_CHUNK, self.n - self._count)
            draw = np.clip(self._rng.randn(k, h, w, 3) + 0.5, 0, 1) * 255
            self._made.append(np.array(draw, dtype=np.uint8))
            self._count += k


def build(name: str, dataset, root: str | Path | None = None) -> GaussianNoise:
    return GaussianNoise(image_size(dataset), name=name)
