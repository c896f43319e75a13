"""Outlier sources: images of classes the model never learned, served as domains.

A stream with ``stream.outliers.ratio > 0`` adds, for every test domain ``(corruption,
severity)``, the domain ``Domain(corruption, severity, source)`` of an outlier source. The run
wraps the dataset in :class:`WithOutliers`, which answers ``labels`` (-1 for every outlier) and
``images`` for both kinds of domain; the stream only ever sees the names and labels.

Sources (STAMP, Yu et al. ECCV 2024, Sec. 4.1, and its ``src/data/data.py``):

=================== ==========================================================================
``embedded_ood``    shapes the embedded model never saw, by the embedded generator, corrupted
                    with the same recipes (dataset=embedded)
``noise``           STAMP's Gaussian noise set: 10,000 images ``clip(N(0.5, 1))`` (12,500 at
                    ImageNet size), seed 1, the same under every corruption
``split``           the test set's own held-out classes (class-split datasets such as
                    ``dataset=embedded_8_2``, STAMP's cifar10c_8_2)
``svhn_c`` ...      STAMP's corrupted OOD sets from disk (ttabench/data/outliers/disk.py)
=================== ==========================================================================

Adding a source is one module here with a ``build(dataset, root)`` function and one line in
:data:`SOURCES`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from ttabench.data.base import CorruptionDataset
from ttabench.domains import Domain

#: source name -> module (below this package) whose ``build(dataset, root)`` makes it
SOURCES = {
    "embedded_ood": "embedded_ood",
    "noise": "noise",
    "split": "split",
    "svhn_c": "disk",
    "lsun_c": "disk",
    "tiny_imagenet_c": "disk",
    "textures_c": "disk",
    "places365_c": "disk",
}


@runtime_checkable
class OutlierSource(Protocol):
    """Outlier images under the test set's corruptions, at the test set's image size."""

    name: str

    def labels(self, domain: Domain) -> np.ndarray:
        """-1 for every outlier sample of ``domain`` (its length is how many there are)."""
        ...

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        """uint8 images (N, 3, H, W) at the test set's size."""
        ...

    def provenance(self) -> dict[str, str]: ...


def build_source(name: str, dataset: CorruptionDataset, root: str | Path | None = None):
    """The outlier source ``name`` for ``dataset`` (``root``: where disk sets live; None: the
    dataset's root, then ``$TTA_DATA_ROOT``)."""
    if name not in SOURCES:
        raise ValueError(f"stream.outliers.source={name!r}; valid: {', '.join(SOURCES)}")
    module = importlib.import_module(f"{__name__}.{SOURCES[name]}")
    return module.build(name, dataset, root)


class WithOutliers:
    """``dataset`` plus an outlier source: the one object the stream and the loader read."""

    def __init__(self, dataset: CorruptionDataset, source: OutlierSource) -> None:
        self.dataset, self.source = dataset, source
        self.name, self.num_classes = dataset.name, dataset.num_classes
        self.domains = dataset.domains

    def labels(self, domain: Domain) -> np.ndarray:
        return self._owner(domain).labels(domain)

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        return self._owner(domain).images(domain, indices)

    def provenance(self) -> dict[str, str]:
        own = self.source.provenance()
        return self.dataset.provenance() | {f"outliers.{k}": v for k, v in own.items()}

    def __getattr__(self, name: str) -> Any:  # class_names, root, ... of the dataset
        return getattr(self.__dict__["dataset"], name)

    def _owner(self, domain: Domain) -> Any:
        if not domain.outliers:
            return self.dataset
        if domain.outliers != self.source.name:
            raise ValueError(f"domain {domain.name} is not of outlier source {self.source.name}")
        return self.source


def image_size(dataset: CorruptionDataset) -> tuple[int, int]:
    """(H, W) of the test set's images (one image of its first domain is read)."""
    first = dataset.domains[0]
    return tuple(dataset.images(first, np.zeros(1, dtype=np.int64)).shape[-2:])
