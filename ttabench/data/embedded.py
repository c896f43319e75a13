"""The offline embedded benchmark: the synthetic test split under every available corruption.

Works like CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019) generated on the fly: 10 classes x
1,000 test images, each corruption at severities 1-5 with the CIFAR parameter tables. Seeding is
per sample, as for generated benchmarks: image ``i`` of a domain is corrupted with the generator
of ``(seed, corruption, severity, i)`` (``corruptions.sample_generators``), so it does not depend
on chunking, batch size or ``n_per_domain``; the corruption runs batched, one call per chunk.
Each domain is corrupted once and cached as a ``.npy`` file that is then memory-mapped, so only
the rows a batch needs are read. The cache key covers the generator, the corruption code, the
seeding scheme and the seed (and frost's textures / spatter's OpenCV for those domains), so a
change never serves stale images.

``classes=K`` makes a class split (``dataset=embedded_8_2``, as STAMP's cifar10c_8_2, Yu et al.
ECCV 2024): the test samples of labels ``0..K-1`` are the dataset, those of the held-out
classes ``K..9`` (``held_out_rows``) are the outliers of ``stream.outliers.source=split``.
Both are views of the same cached arrays, so the split changes no cache file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ttabench.atomic import save_npy
from ttabench.data import synthetic
from ttabench.data.base import checked_indices
from ttabench.data.corruptions import (
    available_corruptions,
    corrupt,
    corruption_fingerprint,
    corruption_provenance,
    sample_generators,
    unavailable_reason,
)
from ttabench.data.roots import check_distinct
from ttabench.domains import Domain

CLEAN = "clean"  # pseudo-corruption: the clean test images (severity 0)
_CHUNK = 1000
_SEEDING = "per sample (seed, corruption, severity, index)"


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir``, else ``$TTABENCH_CACHE``, else ``~/.cache/ttabench``."""
    if cache_dir:
        return Path(cache_dir)
    return Path(os.environ.get("TTABENCH_CACHE", Path.home() / ".cache" / "ttabench"))


def corruption_code_hash() -> str:
    """SHA-256 of the corruption package's sources (part of every cache key and record)."""
    h = hashlib.sha256()
    for path in sorted((Path(__file__).parent / "corruptions").glob("*.py")):
        h.update(path.name.encode() + path.read_bytes())
    return h.hexdigest()


class EmbeddedCorruptions:
    """The synthetic test split under corruptions (see module docstring).

    Args:
        corruptions: corruption names in stream order (``clean`` allowed).
        severity: one severity 1-5, or a list of them.
        n_per_domain: keep only the first ``n`` test images of every domain (quick runs);
            the split's labels are a seeded permutation, so any prefix is near-balanced.
        seed: generator seed for the clean images and the corruption noise.
        cache_dir: where generated domains are cached (default ``$TTABENCH_CACHE``).
        classes: keep only the test samples of labels ``< classes``, in dataset order
            (``num_classes`` becomes ``classes``); the others are held out as outliers
            (``held_out_rows``). None: all 10 classes.
    """

    num_classes = len(synthetic.CLASSES)
    class_names = synthetic.CLASSES
    #: cache folder below the cache root (a subclass with other clean images has its own)
    cache_folder = "embedded"

    def __init__(
        self,
        corruptions: Sequence[str],
        severity: int | Sequence[int] = 5,
        n_per_domain: int | None = None,
        seed: int = 0,
        cache_dir: str | None = None,
        name: str = "embedded",
        classes: int | None = None,
    ) -> None:
        valid = [CLEAN, *available_corruptions()]
        unknown = [c for c in corruptions if c not in valid]
        if unknown or not corruptions:
            raise ValueError(f"unknown corruption(s) {unknown}; valid: {valid}")
        check_distinct(corruptions)
        for c in dict.fromkeys(corruptions):
            reason = None if c == CLEAN else unavailable_reason(c)
            if reason:
                keep = ",".join(k for k in corruptions if k != c)
                raise ValueError(f"{reason} (or drop it: dataset.corruptions=[{keep}])")
        severities = [severity] if isinstance(severity, int) else list(severity)
        if not severities or any(s not in range(1, 6) for s in severities):
            raise ValueError(f"severity must be in 1..5 (or a list of them), got {severity}")
        if n_per_domain is not None and n_per_domain < 1:
            raise ValueError(f"n_per_domain must be >= 1 or null, got {n_per_domain}")
        total = len(type(self).class_names)
        if classes is not None and classes not in range(2, total + 1):
            raise ValueError(f"classes must be in 2..{total} or null, got {classes!r}")
        self.classes = classes
        if classes is not None:
            self.num_classes, self.class_names = classes, type(self).class_names[:classes]
        self.name = name
        self.seed = seed
        self.cache_dir = cache_dir
        self.corruptions = [c for c in corruptions if c != CLEAN]
        self.n_per_domain = n_per_domain
        self.domains = [
            Domain(c, 0 if c == CLEAN else s)
            for c in corruptions
            for s in ([0] if c == CLEAN else severities)
        ]
        self.code_hash = corruption_code_hash()[:16]
        key = hashlib.sha256(
            (self._clean_fingerprint() + corruption_code_hash() + _SEEDING).encode()
        ).hexdigest()[:16]
        self.cache = cache_root(cache_dir) / self.cache_folder / key
        self._tags = {c: corruption_fingerprint(c) for c in self.corruptions}
        self._arrays: dict[Domain, np.ndarray] = {}
        self._kept: np.ndarray | None = None

    def labels(self, domain: Domain) -> np.ndarray:
        if self.classes is not None:
            return self.all_labels()[self.kept_rows()]
        return self._load(Domain(CLEAN, 0), "labels")[: self.n_per_domain].astype(np.int64)

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        if self.classes is not None:
            kept = self.kept_rows()
            return self.rows(domain, kept[checked_indices(indices, len(kept))])
        array = self._domain_images(domain)
        if self.n_per_domain is not None and len(indices) and indices.max() >= self.n_per_domain:
            raise IndexError(f"index beyond n_per_domain={self.n_per_domain}")
        return torch.from_numpy(np.ascontiguousarray(array[indices]))

    def all_labels(self) -> np.ndarray:
        """The labels of every row of the full test array (no class split, no ``n_per_domain``)."""
        return self._load(Domain(CLEAN, 0), "labels").astype(np.int64)

    def rows(self, domain: Domain, rows: np.ndarray) -> torch.Tensor:
        """uint8 images of ``rows`` of the full test array of ``domain`` (the underlying rows,
        not positions in the class split or the ``n_per_domain`` prefix)."""
        array = self._domain_images(domain)
        return torch.from_numpy(np.ascontiguousarray(array[checked_indices(rows, len(array))]))

    def kept_rows(self) -> np.ndarray:
        """The full array's rows this dataset serves, in order: position ``i`` of ``labels`` and
        ``images`` is row ``kept_rows()[i]`` (labels ``< classes``, first ``n_per_domain``)."""
        if self._kept is None:
            labels = self.all_labels()
            keep = labels < self.classes if self.classes is not None else np.ones(len(labels), bool)
            self._kept = np.flatnonzero(keep)[: self.n_per_domain]
        return self._kept

    def held_out_rows(self) -> np.ndarray:
        """The full array's rows of the held-out classes (label ``>= classes``) in dataset order,
        all of them (``n_per_domain`` limits the kept samples only); empty without a split."""
        if self.classes is None:
            return np.zeros(0, dtype=np.int64)
        return np.flatnonzero(self.all_labels() >= self.classes)

    def provenance(self) -> dict[str, str]:
        """``source=embedded``, generator fingerprint, profile, seed and seeding, corruption code,
        and what frost / spatter / JPEG used (textures and hash, OpenCV, codec versions); the
        kept classes of a class split."""
        split = {} if self.classes is None else {"classes": f"0-{self.classes - 1}"}
        return {
            "source": "embedded",
            "generator_fingerprint": synthetic.fingerprint(self.seed)[:16],
            "corruption_profile": "cifar",
            "seed": str(self.seed),
            "seeding": _SEEDING,
            "corruption_code": self.code_hash,
            **corruption_provenance(self.corruptions),
            **split,
        }

    def _domain_images(self, domain: Domain) -> np.ndarray:
        if domain.corruption != CLEAN and domain.corruption not in available_corruptions():
            raise ValueError(f"unknown corruption {domain.corruption!r}")
        if domain not in self._arrays:
            self._arrays[domain] = self._load(domain, "images")
        return self._arrays[domain]

    def _load(self, domain: Domain, what: str) -> np.ndarray:
        """Memory-map a cached array, generating and caching it first if needed."""
        tag = None
        if what == "images" and domain.corruption != CLEAN:
            if domain.corruption not in self._tags:
                self._tags[domain.corruption] = corruption_fingerprint(domain.corruption)
            tag = self._tags[domain.corruption]
        name = f"{domain.corruption}-{domain.severity}-{what}" + (f"-{tag}" if tag else "")
        path = self.cache / f"{name}.npy"
        if not path.exists():
            self.cache.mkdir(parents=True, exist_ok=True)
            array = self._generate(domain, what)
            save_npy(path, array)  # atomic: parallel runs never read a half-written file
        return np.load(path, mmap_mode="r", allow_pickle=False)

    def _clean_fingerprint(self) -> str:
        """What the clean images are a function of (part of the cache key)."""
        return synthetic.fingerprint(self.seed)

    def _clean(self) -> tuple[np.ndarray, np.ndarray]:
        """The clean images and labels every domain corrupts."""
        return synthetic.generate("test", self.seed)

    def _generators(self, corruption: str, severity: int, indices: range) -> list:
        """The per-sample noise generators of the corruption (spec 6.2 seeding)."""
        return sample_generators(self.seed, corruption, severity, indices)

    def _generate(self, domain: Domain, what: str) -> np.ndarray:
        if domain.corruption == CLEAN:
            images, labels = self._clean()
            return labels if what == "labels" else images
        clean = torch.from_numpy(np.array(self._load(Domain(CLEAN, 0), "images")))
        out = torch.empty_like(clean)
        for start in range(0, len(clean), _CHUNK):
            stop = min(start + _CHUNK, len(clean))
            name, severity = domain.corruption, domain.severity
            gens = self._generators(name, severity, range(start, stop))
            out[start:stop] = corrupt(clean[start:stop], name, severity, gens)
        return out.numpy()
