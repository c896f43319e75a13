"""The ``Domain`` record: what a test sample's distribution is, shared by streams and datasets.

Streams are index-only: they order (domain, index) pairs from label arrays and never touch data
code; datasets and outlier sources serve the images of a domain. This record is the one thing
both sides speak, so it lives here, outside either package.
"""

from __future__ import annotations

from typing import NamedTuple


class Domain(NamedTuple):
    """One test domain: a corruption at one severity (``severity`` 0 means clean), of the
    benchmark's own test set (``outliers`` empty) or of an outlier set (``outliers`` names the
    source, e.g. ``embedded_ood``: images of classes the model never learned, corrupted the
    same way, label -1)."""

    corruption: str
    severity: int
    outliers: str = ""

    @property
    def name(self) -> str:
        base = f"{self.corruption}-{self.severity}"
        return f"{base}+{self.outliers}" if self.outliers else base

    @property
    def is_outlier(self) -> bool:
        return bool(self.outliers)

    def inlier(self) -> Domain:
        """The benchmark's own domain under the same corruption and severity."""
        return Domain(self.corruption, self.severity)
