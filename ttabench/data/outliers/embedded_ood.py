"""``embedded_ood``: the embedded benchmark's outliers, shapes its model never learned
(:mod:`ttabench.data.unseen_shapes`), corrupted with the same recipes and severities.

Like every embedded domain, each outlier domain is generated once and cached; an outlier's
corruption noise is seeded per sample by ``(seed, "<corruption>+ood", severity, index)``, so it
is not the noise of the test image with the same index.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ttabench.data import unseen_shapes
from ttabench.data.corruptions import sample_generators
from ttabench.data.embedded import EmbeddedCorruptions
from ttabench.domains import Domain


class EmbeddedOutliers(EmbeddedCorruptions):
    """Unseen shapes under the corruptions of an :class:`EmbeddedCorruptions` (same seed and
    cache root); every label is -1."""

    cache_folder = "embedded_ood"

    def labels(self, domain: Domain) -> np.ndarray:
        return np.full(unseen_shapes.SIZE, -1, dtype=np.int64)

    def provenance(self) -> dict[str, str]:
        return super().provenance() | {
            "source": "embedded_ood",
            "generator_fingerprint": unseen_shapes.fingerprint(self.seed)[:16],
            "shapes": ",".join(unseen_shapes.SHAPES),
        }

    def _clean_fingerprint(self) -> str:
        return unseen_shapes.fingerprint(self.seed)

    def _clean(self) -> tuple[np.ndarray, np.ndarray]:
        return unseen_shapes.generate(self.seed)

    def _generators(self, corruption: str, severity: int, indices: range) -> list:
        return sample_generators(self.seed, f"{corruption}+ood", severity, indices)


def build(name: str, dataset, root: str | Path | None = None) -> EmbeddedOutliers:
    if not isinstance(dataset, EmbeddedCorruptions):
        raise ValueError(
            f"stream.outliers.source=embedded_ood draws unseen classes of the embedded generator "
            f"and fits dataset=embedded, not dataset={dataset.name}; use noise, split or a disk "
            "set (svhn_c, lsun_c, tiny_imagenet_c, textures_c, places365_c)"
        )
    severities = sorted({d.severity for d in dataset.domains if d.severity > 0}) or [5]
    source = EmbeddedOutliers(
        dataset.corruptions or ["clean"],
        severities,
        seed=dataset.seed,
        cache_dir=dataset.cache_dir,
        name=name,
    )
    return source
