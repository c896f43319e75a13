"""The realised stream: an ordered list of (domain, index) pairs cut into batches.

A :class:`StreamPlan` is index-only (no image is touched), immutable, hashable to a SHA-256 that
identifies the exact order, and saved next to every result (specs/streams.md: "record the
realised order"). File format (``stream.npz``, NumPy compressed archive, no pickles):

=================  ===========  ======================================================
key                dtype        meaning
=================  ===========  ======================================================
``format``         str          ``"ttabench-stream-v1"``
``corruptions``    str (D,)     domain table: corruption of domain id d
``severities``     int64 (D,)   domain table: severity of domain id d
``outliers``       str (D,)     domain table: outlier source of domain id d ("": the test
                                set's own; absent in files of streams without outliers)
``domain_ids``     int64 (N,)   domain id of every stream position
``indices``        int64 (N,)   index of the sample within its domain's dataset
``batch_starts``   int64 (B+1)  batch b is positions ``batch_starts[b]:batch_starts[b+1]``
``resets``         bool (B,)    reset the method before batch b
``sha256``         str          :meth:`StreamPlan.sha256` at save time (checked on load)
=================  ===========  ======================================================
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from ..domains import Domain

FORMAT = "ttabench-stream-v1"
FILENAME = "stream.npz"


class Batch(NamedTuple):
    """One batch of a plan: its number, per-sample domain ids and indices, and the reset flag."""

    number: int
    domain_ids: np.ndarray
    indices: np.ndarray
    reset: bool


@dataclass(frozen=True, eq=False)
class StreamPlan:
    """An ordered, batched stream of (domain, index) pairs.

    Attributes:
        domains: Domain table; a domain's id is its position here.
        domain_ids: int64 domain id of every stream position.
        indices: int64 index within that domain's dataset of every stream position.
        batch_starts: int64, length ``n_batches + 1``, from 0 to ``len(plan)``.
        resets: bool per batch: reset the method before this batch.
    """

    domains: list[Domain]
    domain_ids: np.ndarray
    indices: np.ndarray
    batch_starts: np.ndarray
    resets: np.ndarray

    def __post_init__(self) -> None:
        table = [Domain(str(d[0]), int(d[1]), *(str(o) for o in d[2:3])) for d in self.domains]
        arrays = {
            "domain_ids": np.asarray(self.domain_ids, dtype=np.int64),
            "indices": np.asarray(self.indices, dtype=np.int64),
            "batch_starts": np.asarray(self.batch_starts, dtype=np.int64),
            "resets": np.asarray(self.resets, dtype=bool),
        }
        ids, idx, starts, resets = arrays.values()
        n = len(ids)
        if idx.shape != (n,) or ids.ndim != 1:
            raise ValueError("domain_ids and indices must be 1-D arrays of equal length")
        if starts.ndim != 1 or len(starts) < 1 or starts[0] != 0 or starts[-1] != n:
            raise ValueError("batch_starts must run from 0 to the number of samples")
        if np.any(np.diff(starts) <= 0):
            raise ValueError("batch_starts must be strictly increasing (no empty batch)")
        if resets.shape != (len(starts) - 1,):
            raise ValueError("resets must hold one flag per batch")
        if n and (ids.min() < 0 or ids.max() >= len(table) or idx.min() < 0):
            raise ValueError("domain_ids must index the domain table; indices must be >= 0")
        object.__setattr__(self, "domains", table)
        for name, value in arrays.items():
            value.setflags(write=False)
            object.__setattr__(self, name, value)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def n_batches(self) -> int:
        """Number of batches."""
        return len(self.batch_starts) - 1

    def batches(self) -> Iterator[Batch]:
        """Yield every batch in stream order (arrays are read-only views)."""
        starts = self.batch_starts
        for b in range(self.n_batches):
            lo, hi = starts[b], starts[b + 1]
            yield Batch(b, self.domain_ids[lo:hi], self.indices[lo:hi], bool(self.resets[b]))

    def labels_of(self, labels: Callable[[Domain], np.ndarray]) -> np.ndarray:
        """Label of every stream position, given ``labels(domain)`` in dataset order."""
        out = np.empty(len(self), dtype=np.int64)
        for d, domain in enumerate(self.domains):
            mask = self.domain_ids == d
            out[mask] = np.asarray(labels(domain))[self.indices[mask]]
        return out

    def outlier_mask(self) -> np.ndarray:
        """True at every stream position that holds an outlier (a sample of an outlier
        source, label -1), False at the test set's own samples."""
        flags = np.array([d.is_outlier for d in self.domains], dtype=bool)
        return flags[self.domain_ids] if len(self) else np.zeros(0, dtype=bool)

    def inlier_groups(self) -> tuple[list[Domain], np.ndarray]:
        """The test set's domains in order of first appearance in the table, and for every
        domain id the position of its group: an outlier domain belongs to the test set's
        domain under the same corruption and severity (results are reported per group)."""
        groups: dict[Domain, int] = {}
        for d in self.domains:
            groups.setdefault(d.inlier(), len(groups))
        group_of = np.array([groups[d.inlier()] for d in self.domains], dtype=np.int64)
        return list(groups), group_of

    def batch_of(self) -> np.ndarray:
        """Batch number of every stream position."""
        return np.repeat(np.arange(self.n_batches, dtype=np.int64), np.diff(self.batch_starts))

    def sha256(self) -> str:
        """SHA-256 over a canonical encoding of the domain table and all arrays.

        Encoding: a format tag, the domain table as compact JSON ``[[corruption, severity],
        ...]`` (an outlier domain as ``[corruption, severity, source]``), then each of
        domain_ids, indices, batch_starts (little-endian int64) and resets (one byte each),
        every field prefixed with its byte length.
        """
        h = hashlib.sha256()
        rows = [list(d) if d.outliers else list(d[:2]) for d in self.domains]
        table = json.dumps(rows, separators=(",", ":"))
        fields = [
            FORMAT.encode(),
            table.encode(),
            self.domain_ids.astype("<i8").tobytes(),
            self.indices.astype("<i8").tobytes(),
            self.batch_starts.astype("<i8").tobytes(),
            self.resets.astype(np.uint8).tobytes(),
        ]
        for field in fields:
            h.update(len(field).to_bytes(8, "little"))
            h.update(field)
        return h.hexdigest()

    def save(self, path: str | Path) -> Path:
        """Write the plan as ``stream.npz`` (format in the module docstring).

        Args:
            path: A directory (the file is ``path/stream.npz``) or a file path ending in .npz.

        Returns:
            The path of the written file.
        """
        path = Path(path)
        if path.suffix != ".npz":
            path.mkdir(parents=True, exist_ok=True)
            path = path / FILENAME
        np.savez_compressed(
            path,
            format=np.array(FORMAT),
            corruptions=np.array([d.corruption for d in self.domains], dtype=str),
            severities=np.array([d.severity for d in self.domains], dtype=np.int64),
            **(
                {"outliers": np.array([d.outliers for d in self.domains], dtype=str)}
                if any(d.outliers for d in self.domains)
                else {}
            ),
            domain_ids=self.domain_ids,
            indices=self.indices,
            batch_starts=self.batch_starts,
            resets=self.resets,
            sha256=np.array(self.sha256()),
        )
        return path

    @classmethod
    def load(cls, path: str | Path) -> StreamPlan:
        """Read a plan written by :meth:`save` (a directory or the .npz file itself).

        Raises:
            ValueError: Unknown format, or the stored SHA-256 does not match the content.
        """
        path = Path(path)
        if path.is_dir():
            path = path / FILENAME
        with np.load(path, allow_pickle=False) as f:
            if str(f["format"]) != FORMAT:
                raise ValueError(f"{path}: not a {FORMAT} file")
            sources = f["outliers"] if "outliers" in f.files else [""] * len(f["corruptions"])
            table = zip(f["corruptions"], f["severities"], sources, strict=True)
            domains = [Domain(str(c), int(s), str(o)) for c, s, o in table]
            plan = cls(domains, f["domain_ids"], f["indices"], f["batch_starts"], f["resets"])
            stored = str(f["sha256"])
        if plan.sha256() != stored:
            raise ValueError(f"{path}: content does not match its stored sha256 {stored}")
        return plan
