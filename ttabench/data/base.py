"""What every corruption dataset offers the stream and the runner.

A *domain* is one (corruption, severity) pair, e.g. ``Domain("gaussian_noise", 5)``. Streams only
ever see label arrays (``labels(domain)``), so they can order samples without decoding an image;
the runner then asks for the images of one batch (``images(domain, indices)``) as uint8 tensors.
Input normalisation is the model wrapper's job, never the dataset's.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np
import torch

from ttabench.domains import Domain


@runtime_checkable
class CorruptionDataset(Protocol):
    """A test set seen under several corruptions and severities.

    ``domains`` are the configured ones (corruptions x severities, in the configured order);
    ``labels`` and ``images`` must also accept any other severity of a configured corruption,
    because the ``gradual`` schedule visits severities 1..5..1.
    """

    name: str
    num_classes: int
    domains: list[Domain]

    def labels(self, domain: Domain) -> np.ndarray:
        """Integer class labels (int64) of every sample of ``domain``, in dataset order."""
        ...

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        """uint8 images (N, 3, H, W) of the samples at ``indices`` of ``domain``."""
        ...

    def provenance(self) -> dict[str, str]:
        """Where the images come from (files / generated / embedded), parameters and seed."""
        ...


def checked_indices(indices: np.ndarray, n: int) -> np.ndarray:
    """``indices`` as int64, or an IndexError naming the valid range ``0..n-1`` of a domain."""
    indices = np.asarray(indices, dtype=np.int64)
    if indices.size and (indices.min() < 0 or indices.max() >= n):
        raise IndexError(f"indices must be in 0..{n - 1} (the domain has {n} samples)")
    return indices
