"""Reader of the CIFAR-10-C / CIFAR-100-C files (Hendrycks & Dietterich, ICLR 2019).

"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", Zenodo records
2535967 and 3555552: one ``{corruption}.npy`` per corruption, uint8 (50000, 32, 32, 3) HWC, the
10,000 test images at severity 1, then severity 2, ... (``make_cifar_c.py`` loops severities
outermost), plus ``labels.npy`` (50000 uint8, the test labels repeated 5 times). Row
``(s - 1) * 10000 + i`` is image ``i`` at severity ``s``.

Files are memory-mapped (``np.load(mmap_mode="r")``): building the reader reads only the npy
headers and ``labels.npy`` (50 kB), and ``images`` reads only the rows of one batch. Mapped
pages are released from the process every 1024 rows read, so its RSS stays bounded
(``CifarC._release``). The same
layout with ``5 * m`` rows (``ttabench make-c --n-per-domain m``) is accepted with a warning.
"""

from __future__ import annotations

import json
import mmap
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ttabench.data.base import checked_indices
from ttabench.data.corruptions import COMMON_CORRUPTIONS
from ttabench.data.corruptions.tables import ALL_CORRUPTIONS
from ttabench.data.roots import (
    LAYOUTS,
    check_corruptions,
    check_n,
    check_severities,
    find_dir,
    fingerprint_files,
)
from ttabench.domains import Domain

SEVERITIES = 5
PUBLISHED_BLOCK = 10_000  # test images per severity in the published files
MAKE_C_RECORD = "ttabench-make-c.json"  # written by `ttabench make-c` next to generated files


class CifarC:
    """CIFAR-10-C-style ``.npy`` files as a :class:`~ttabench.data.base.CorruptionDataset`.

    Args:
        root: Data root holding ``folder`` (or pointing into it); None: ``$TTA_DATA_ROOT``.
        folder: ``CIFAR-10-C``, ``CIFAR-100-C`` or ``Fashion-MNIST-C`` (make-c output).
        corruptions: Corruption names in stream order (default: the canonical 15).
        severity: One severity 1-5 or a list of them (the configured domains); every severity
            of a configured corruption can be read (the ``gradual`` schedule visits 1..5..1).
        n_per_domain: Keep only the first ``n`` test images of every domain (RobustBench's
            ``load_cifar10c`` takes the first rows too); None: all 10,000.
        num_classes: 10 or 100.
        name: Dataset name recorded with results.

    Raises:
        FileNotFoundError: No data root, no ``labels.npy``, or a corruption file missing (the
            message lists the files looked for and the expected layout).
        ValueError: Unknown corruption, bad severity or ``n_per_domain``, a file of the wrong
            shape or dtype, labels of the wrong length or differing between severity blocks.
    """

    #: Rows read between two releases of the mapped pages (see ``_release``).
    release_rows = 1024

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        folder: str = "CIFAR-10-C",
        corruptions: Sequence[str] = COMMON_CORRUPTIONS,
        severity: int | Sequence[int] = 5,
        n_per_domain: int | None = None,
        num_classes: int = 10,
        name: str = "cifar10c",
    ) -> None:
        corruptions = check_corruptions(corruptions, ALL_CORRUPTIONS)
        severities = check_severities(severity)
        self.name, self.num_classes, self.folder = name, num_classes, folder
        self.dir = find_dir(
            root, [folder], lambda d: [d / "labels.npy", d / f"{corruptions[0]}.npy"], folder
        )
        self._check_files(corruptions)
        labels_path = self.dir / "labels.npy"
        all_labels = _load_labels(labels_path)
        self.block = _block_size(len(all_labels), labels_path)
        blocks = all_labels.reshape(SEVERITIES, self.block)
        if not (blocks == blocks[0]).all():
            raise ValueError(
                f"{labels_path}: the 5 severity blocks of {self.block} labels differ, so rows are "
                f"not severity-major as in {folder} ({LAYOUTS.get(folder, '')})"
            )
        if blocks.size and (blocks.min() < 0 or blocks.max() >= num_classes):
            raise ValueError(
                f"{labels_path}: labels must be in 0..{num_classes - 1}, "
                f"found {blocks.min()}..{blocks.max()}"
            )
        if self.block != PUBLISHED_BLOCK:
            warnings.warn(
                f"{self.dir}: {self.block} images per severity, not the published {PUBLISHED_BLOCK}"
                " (a subset, e.g. written by `ttabench make-c --n-per-domain`)",
                stacklevel=2,
            )
        self.n = check_n(n_per_domain, self.block, folder)
        self._labels = blocks[0, : self.n].astype(np.int64)
        self.corruptions = corruptions
        self.domains = [Domain(c, s) for c in corruptions for s in severities]
        self._maps: dict[str, tuple[mmap.mmap, np.ndarray]] = {}
        self._rows_read = 0  # since the last release of mapped pages
        for c in corruptions:  # header checks now: a bad file is a build error, not a mid-run one
            self._array(c)

    def labels(self, domain: Domain) -> np.ndarray:
        """int64 labels of the first ``n_per_domain`` images (identical for every domain)."""
        self._check_domain(domain)
        return self._labels.copy()

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        """uint8 (N, 3, 32, 32) images of ``indices`` (reads only these rows of the file)."""
        self._check_domain(domain)
        indices = checked_indices(indices, self.n)
        rows = self._array(domain.corruption)[(domain.severity - 1) * self.block + indices]
        self._rows_read += len(indices)
        if self._rows_read >= self.release_rows:
            self._release()
        return torch.from_numpy(np.ascontiguousarray(rows.transpose(0, 3, 1, 2)))

    def provenance(self) -> dict[str, str]:
        """``source=files``, the folder, the files used and their content fingerprint."""
        files = [self.dir / "labels.npy"] + [self.dir / f"{c}.npy" for c in self.corruptions]
        record = {
            "source": "files",
            "benchmark": self.folder,
            "root": str(self.dir),
            "files": ",".join(p.name for p in files),
            "fingerprint": fingerprint_files(files),
            "n_per_domain": str(self.n),
            "profile": "published (make_cifar_c.py)",
            "seed": "none (unseeded originals)",
        }
        return record | make_c_record(self.dir)

    def _check_domain(self, domain: Domain) -> None:
        if domain.corruption not in ALL_CORRUPTIONS:
            raise ValueError(f"unknown corruption {domain.corruption!r} in domain {domain}")
        if not 1 <= domain.severity <= SEVERITIES:
            raise ValueError(f"severity must be in 1..5, got {domain.severity} ({domain})")

    def _check_files(self, corruptions: Sequence[str]) -> None:
        missing = [c for c in corruptions if not (self.dir / f"{c}.npy").is_file()]
        if not (self.dir / "labels.npy").is_file():
            missing = ["labels"] + missing
        if missing:
            looked = ", ".join(str(self.dir / f"{c}.npy") for c in ["labels", *corruptions])
            present = sorted(p.name for p in self.dir.glob("*.npy")) or ["none"]
            raise FileNotFoundError(
                f"{self.folder} in {self.dir} lacks {', '.join(f'{c}.npy' for c in missing)}; "
                f"looked for: {looked}; present: {', '.join(present)}. "
                f"Expected layout: {LAYOUTS.get(self.folder, '')}"
            )

    def _array(self, corruption: str) -> np.ndarray:
        """The memory-mapped rows of ``corruption``'s file (header checked on first use)."""
        if corruption in self._maps:
            return self._maps[corruption][1]
        path = self.dir / f"{corruption}.npy"
        if not path.is_file():
            self._check_files([corruption])
        try:
            header = np.load(path, mmap_mode="r", allow_pickle=False)  # the npy header only
        except (ValueError, OSError) as exc:
            raise ValueError(f"{path} is not a readable .npy file: {exc}") from None
        shape = (SEVERITIES * self.block, 32, 32, 3)
        if header.shape != shape or header.dtype != np.uint8:
            raise ValueError(
                f"{path} has shape {header.shape} dtype {header.dtype}; expected {shape} "
                f"uint8 (HWC, 5 severity blocks of {self.block}, matching labels.npy)"
            )
        # The same read-only shared mapping np.memmap makes, but holding the mmap object so
        # that _release can madvise it (np.memmap keeps its mmap private).
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        array = np.frombuffer(mapped, np.uint8, header.size, header.offset).reshape(shape)
        self._maps[corruption] = (mapped, array)
        return array

    def _release(self) -> None:
        """Drop the mapped pages from this process (they stay in the kernel's page cache).

        Without it, every page a stream touched stays in the process's RSS until the reader is
        garbage-collected: 464 MB over a continual 15-domain CIFAR-10-C stream. Remapping per
        batch costs ~0.4 ms of page faults per batch, and a mixed stream would remap every
        batch part. The kernel maps up to 64 KiB around each faulting 3 kB row, so releasing
        every ``release_rows`` = 1024 rows bounds the mapped pages at ~64 MB, measured 46 MB
        (continual) and 69 MB (mixed) for ~0.2-0.5 ms per batch (scripts/bench_readers.py).
        """
        advice = getattr(mmap, "MADV_DONTNEED", None)
        for mapped, _ in self._maps.values():
            if advice is not None and hasattr(mapped, "madvise"):
                mapped.madvise(advice)
        self._rows_read = 0


def _load_labels(path: Path) -> np.ndarray:
    try:
        labels = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a readable .npy file: {exc}") from None
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{path} has shape {labels.shape} dtype {labels.dtype}; expected (50000,) uint8"
        )
    return labels


def _block_size(rows: int, path: Path) -> int:
    if rows == 0 or rows % SEVERITIES:
        raise ValueError(
            f"{path} has {rows} labels; expected {SEVERITIES * PUBLISHED_BLOCK} "
            f"(5 severity blocks of {PUBLISHED_BLOCK})"
        )
    return rows // SEVERITIES


def make_c_record(folder: Path) -> dict[str, str]:
    """The generator parameters ``ttabench make-c`` left next to the files, if any."""
    path = folder / MAKE_C_RECORD
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"made_by": f"unreadable {MAKE_C_RECORD}"}
    own = {k: str(record.pop(k)) for k in ("profile", "seed") if k in record}
    return {"made_by": "ttabench make-c"} | own | {f"make_c_{k}": str(v) for k, v in record.items()}
