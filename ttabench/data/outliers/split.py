"""``split``: the held-out classes of a class-split test set as outliers (STAMP, Yu et al.
ECCV 2024, Sec. 4.1: ``cifar10c_8_2``, official ``load_cifar8_c`` / ``load_cifar2_c`` in
``src/data/data.py``).

STAMP trains its source model on CIFAR-10 classes 0-7; the test stream is CIFAR-10-C classes
0-7 (labels 0..7) plus the classes 8-9 images of the same corruption and severity (label -1).
Here the dataset (``dataset=embedded_8_2``: ``EmbeddedCorruptions(classes=8)``) serves the kept
classes and this source serves the held-out ones: outlier ``i`` of a domain is the ``i``-th
held-out sample in dataset order (the first N are the stream's, like any source), read from
the same corrupted array as the test samples. The official code shuffles each part once with a
pickled permutation; the stream does its own shuffling, so dataset order is kept here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ttabench.data.base import checked_indices
from ttabench.domains import Domain


class HeldOutClasses:
    """The held-out classes (label ``>= dataset.classes``) of a class-split dataset, every label
    -1, under the dataset's own domains.

    Args:
        dataset: a class-split dataset: ``held_out_rows()`` (its full array's rows of the
            held-out classes, in order) and ``rows(domain, rows)`` (those rows' images).
        name: the source name the outlier domains carry.
    """

    def __init__(self, dataset, name: str = "split") -> None:
        self.name, self.dataset = name, dataset
        self.held_out = np.asarray(dataset.held_out_rows(), dtype=np.int64)

    def labels(self, domain: Domain) -> np.ndarray:
        return np.full(len(self.held_out), -1, dtype=np.int64)

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        rows = self.held_out[checked_indices(indices, len(self.held_out))]
        return self.dataset.rows(domain.inlier(), rows)

    def provenance(self) -> dict[str, str]:
        classes, total = self.dataset.classes, len(type(self.dataset).class_names)
        return {
            "source": "split",
            "held_out_classes": f"{classes}-{total - 1}",
            "n": str(len(self.held_out)),
        }


def build(name: str, dataset, root: str | Path | None = None) -> HeldOutClasses:
    held_out = getattr(dataset, "held_out_rows", None)
    if held_out is None or getattr(dataset, "classes", None) is None or not len(held_out()):
        raise ValueError(
            f"stream.outliers.source=split serves the held-out classes of a class-split dataset, "
            f"and dataset={dataset.name} holds none out; use dataset=embedded_8_2 (the embedded "
            "benchmark's classes 0-7, classes 8-9 as outliers, with model=embedded_8), or "
            "another source (embedded_ood, noise, or a disk set such as svhn_c)"
        )
    return HeldOutClasses(dataset, name=name)
