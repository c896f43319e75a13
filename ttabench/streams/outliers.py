"""Outliers in a stream: samples of classes the model never learned, mixed into any stream.

STAMP (Yu et al., ECCV 2024, Sec. 4.1; official ``load_ood_dataset_test``) builds an open-world
domain by concatenating the corrupted test set with the first ``N`` images of an outlier set
under the same corruption and severity, then shuffling (label -1). ``N`` follows from
``ratio``, the outliers' share of the stream: ``N = round(ratio / (1 - ratio) * n)`` for ``n``
test samples of the domain (STAMP's 2,500 outliers per 10,000 CIFAR images is ``ratio=0.2``).

Two mixing rules, both drawn from a generator of their own (so the test samples' order is the
one the stream has without outliers):

- ``interleave`` (default): the test samples keep the order the label ordering gave them (a
  Dirichlet stream keeps its label correlation); the outliers, shuffled, take uniformly drawn
  positions among them. Under ``labels=iid`` this has the same distribution as STAMP's rule.
- ``shuffle``: STAMP's literal rule, the union shuffled. It would destroy a non-i.i.d.
  ordering, so it is refused unless ``labels=iid``.

The stream sees an outlier source only as domains (``Domain(corruption, severity, source)``)
and their labels; which images they are is the data side's business (ttabench/data/outliers).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..domains import Domain

MIXES = ("interleave", "shuffle")


@dataclass(frozen=True)
class Outliers:
    """The ``stream.outliers`` knobs.

    Attributes:
        ratio: Outliers' share of the stream, in [0, 1); 0 (default) adds none and leaves the
            stream exactly as without the knob.
        source: Name of the outlier source (``ttabench/data/outliers``: ``embedded_ood``,
            ``noise``, ``split``, ``svhn_c``, ...); the stream only uses it as a domain tag.
        mix: ``interleave`` or ``shuffle`` (module docstring).
    """

    ratio: float = 0.0
    source: str = "embedded_ood"
    mix: str = "interleave"

    @classmethod
    def from_knob(cls, value: Any) -> Outliers:
        """``stream.outliers`` as given in the config (a mapping or None), checked."""
        if value is None:
            return cls()
        if not isinstance(value, Mapping):
            raise ValueError(
                "stream.outliers must be a node like {ratio: 0.2, source: embedded_ood, "
                f"mix: interleave}}, got {value!r}"
            )
        unknown = sorted(set(value) - {"ratio", "source", "mix"})
        if unknown:
            raise ValueError(f"unknown stream.outliers key(s) {unknown}; known: mix, ratio, source")
        ratio = value.get("ratio", 0.0)
        if isinstance(ratio, bool) or not isinstance(ratio, int | float | np.number):
            raise ValueError(f"stream.outliers.ratio must be a number in [0, 1), got {ratio!r}")
        if not (math.isfinite(ratio) and 0 <= ratio < 1):
            raise ValueError(f"stream.outliers.ratio must be in [0, 1), got {ratio!r}")
        source = value.get("source", cls.source)
        if not isinstance(source, str) or not source or not source.isidentifier():
            raise ValueError(
                f"stream.outliers.source must be the name of an outlier source, got {source!r}"
            )
        mix = value.get("mix", cls.mix)
        if mix not in MIXES:
            raise ValueError(f"stream.outliers.mix={mix!r}; valid: {', '.join(MIXES)}")
        return cls(float(ratio), source, mix)

    @property
    def active(self) -> bool:
        return self.ratio > 0

    def count(self, n_inliers: int) -> int:
        """Outliers that go with ``n_inliers`` test samples of one domain."""
        return int(round(self.ratio / (1 - self.ratio) * n_inliers))

    def check_ordering(self, labels: str) -> None:
        if self.active and self.mix == "shuffle" and labels != "iid":
            raise ValueError(
                f"stream.outliers.mix=shuffle (STAMP's rule) shuffles the whole stream and would "
                f"destroy the labels={labels} ordering; use stream.outliers.mix=interleave"
            )


def add_outliers(
    outliers: Outliers,
    domains: list[Domain],
    domain_ids: np.ndarray,
    indices: np.ndarray,
    table: dict[Domain, int],
    labels: Callable[[Domain], np.ndarray],
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """One visit's ordered test samples (``domain_ids`` into ``table``, ``indices``) with its
    outliers mixed in: for every domain of the visit the first ``outliers.count(n)`` samples of
    its outlier domain (added to ``table``), shuffled and placed by ``outliers.mix``."""
    counts = np.bincount(domain_ids, minlength=len(table))
    parts_ids, parts_idx = [], []
    for domain in domains:
        n = outliers.count(int(counts[table[domain]]))
        if n == 0:
            continue
        tagged = Domain(domain.corruption, domain.severity, outliers.source)
        available = len(np.asarray(labels(tagged)))
        if n > available:
            raise ValueError(
                f"stream.outliers.ratio={outliers.ratio} needs {n} outliers under {domain.name}, "
                f"but source {outliers.source} has {available}; lower the ratio or "
                "stream.n_samples"
            )
        parts_ids.append(np.full(n, table.setdefault(tagged, len(table)), dtype=np.int64))
        parts_idx.append(np.arange(n, dtype=np.int64))
    if not parts_ids:
        return domain_ids, indices
    out_ids, out_idx = np.concatenate(parts_ids), np.concatenate(parts_idx)
    shuffled = rng.permutation(len(out_ids))
    out_ids, out_idx = out_ids[shuffled], out_idx[shuffled]
    total = len(domain_ids) + len(out_ids)
    if outliers.mix == "shuffle":
        order = rng.permutation(total)
        return (
            np.concatenate([domain_ids, out_ids])[order],
            np.concatenate([indices, out_idx])[order],
        )
    is_out = np.zeros(total, dtype=bool)
    is_out[rng.choice(total, len(out_ids), replace=False)] = True
    merged_ids, merged_idx = np.empty(total, np.int64), np.empty(total, np.int64)
    merged_ids[is_out], merged_idx[is_out] = out_ids, out_idx
    merged_ids[~is_out], merged_idx[~is_out] = domain_ids, indices
    return merged_ids, merged_idx
