"""Corruption benchmarks generated from a clean test set on the fly (``dataset.source=generate``).

Rebuilds CIFAR-10-C-style domains (Hendrycks & Dietterich, ICLR 2019, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations") with ``ttabench.data.corruptions``.
The originals are unseeded, so only distributional fidelity is possible; the rebuild is seeded.

Seeding is per sample: the noise of a sample under (corruption, severity) comes from a generator
seeded by ``SeedSequence([seed, crc32(corruption), severity, index])``, where ``index`` is the
sample's position in the *full* clean set (``corruptions.sample_generators``). An image then
depends on those four numbers only, not on batch size, stream order, worker count,
``n_per_domain``, an id list or the cache's chunk size, so a 5,000-image ImageNet subset and the
full 50,000 agree on shared images, and ``make-c`` writes exactly what this class serves. The
corruption itself stays one batched call per chunk: ``corrupt`` takes one generator per sample.

ImageNet profile: each corrupted image is JPEG-encoded at quality 85 (PIL, ``optimize=True``)
and decoded again, replaying ``make_imagenet_c.py``'s final save (evaluation on the JPEGs is what
the authors recommend; issue #16 saw ~10 points difference without it).

Cache: rows are generated and cached in fixed chunks (``<cache>/generated/<source>/<key>/
<corruption>-<severity>/<chunk>.npy``, memory-mapped on use), only for chunks a stream touches.
The key hashes the clean files' fingerprint, the sample list, the corruption code, profile, seed
and JPEG replay, and a domain folder of frost / spatter also names a hash of their textures /
OpenCV version, so a change of any of them never serves stale images.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from ttabench.atomic import save_npy
from ttabench.data.base import checked_indices
from ttabench.data.clean import CleanSet
from ttabench.data.corruptions import (
    COMMON_CORRUPTIONS,
    corrupt,
    corruption_fingerprint,
    corruption_provenance,
    sample_generators,
    unavailable_reason,
)
from ttabench.data.corruptions.tables import ALL_CORRUPTIONS
from ttabench.data.embedded import cache_root, corruption_code_hash
from ttabench.data.roots import check_corruptions, check_severities
from ttabench.domains import Domain

JPEG_QUALITY = 85  # make_imagenet_c.py: Image.save(..., quality=85, optimize=True)
MAX_BATCH = 1024  # images per corrupt call up to 64 px (64 at 224 px)


def check_generatable(corruptions: Sequence[str]) -> list[str]:
    """Known corruptions that can run here, or a ValueError saying why not and what to do.

    frost needs its texture photographs and spatter OpenCV (optional installs); the error
    carries the install instructions of the first missing piece.
    """
    names = check_corruptions(corruptions, ALL_CORRUPTIONS)
    reasons = {c: unavailable_reason(c) for c in dict.fromkeys(names)}
    missing = [c for c, reason in reasons.items() if reason]
    if missing:
        keep = [c for c in names if c not in missing]
        raise ValueError(
            f"{', '.join(missing)} cannot be generated ({reasons[missing[0]]}); use the "
            f"published files (dataset.source=files) or drop it: "
            f"dataset.corruptions=[{','.join(keep)}]"
        )
    return names


def sample_generator(seed: int, corruption: str, severity: int, index: int) -> torch.Generator:
    """The generator of one sample's corruption noise (see module docstring)."""
    return sample_generators(seed, corruption, severity, [index])[0]


def corrupt_samples(
    clean: CleanSet, positions: np.ndarray, corruption: str, severity: int, seed: int
) -> torch.Tensor:
    """uint8 (n, 3, H, W): the clean samples at ``positions`` corrupted, before any JPEG save.

    One batched ``corrupt`` call per ``MAX_BATCH`` images (bounding the float64 temporaries at
    224 px); per-sample generators make the result independent of that split.
    """
    images = torch.from_numpy(np.ascontiguousarray(clean.images(positions)))
    out = torch.empty_like(images)
    step = MAX_BATCH if clean.image_size <= 64 else MAX_BATCH // 16
    for start in range(0, len(images), step):
        rows = slice(start, start + step)
        gens = sample_generators(seed, corruption, severity, clean.index[positions][rows])
        out[rows] = corrupt(images[rows], corruption, severity, gens, clean.profile)
    return out


def jpeg_bytes(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """The JPEG file of one uint8 (3, H, W) image, saved as ``make_imagenet_c.py`` saves."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))).save(
        buffer, format="JPEG", quality=quality, optimize=True
    )
    return buffer.getvalue()


def jpeg_replay(images: torch.Tensor, quality: int = JPEG_QUALITY) -> torch.Tensor:
    """Each image of a uint8 (n, 3, H, W) batch after a JPEG save and a PIL decode."""
    out = [
        np.asarray(Image.open(io.BytesIO(jpeg_bytes(img, quality))).convert("RGB"))
        for img in images.numpy()
    ]
    return torch.from_numpy(np.stack(out).transpose(0, 3, 1, 2).copy()) if out else images


class GeneratedCorruptions:
    """A clean set under corruptions generated on demand and cached (see module docstring).

    Args:
        clean: The clean test set (:func:`ttabench.data.clean.load_clean`).
        corruptions: Corruption names in stream order (frost needs its textures, spatter
            OpenCV; a missing one is a ValueError at construction).
        severity: One severity 1-5 or a list; every severity can be read.
        seed: Corruption noise seed.
        jpeg_quality: Replay a JPEG save at this quality (85 for the ImageNet profile; None:
            no replay, as for CIFAR-10-C's ``.npy`` files).
        cache_dir: Cache folder (default ``$TTABENCH_CACHE`` or ``~/.cache/ttabench``).
        name: Dataset name recorded with results.
        chunk: Samples per cache file (None: 1024 up to 64 px, else 64); only granularity, the
            images do not depend on it.
    """

    def __init__(
        self,
        clean: CleanSet,
        corruptions: Sequence[str] = COMMON_CORRUPTIONS,
        severity: int | Sequence[int] = 5,
        seed: int = 0,
        jpeg_quality: int | None = None,
        cache_dir: str | os.PathLike | None = None,
        name: str = "generated",
        chunk: int | None = None,
    ) -> None:
        corruptions = check_generatable(corruptions)
        severities = check_severities(severity)
        self.clean, self.name, self.seed = clean, name, seed
        self.num_classes = clean.num_classes
        self.jpeg_quality = jpeg_quality
        self.chunk = chunk or (1024 if clean.image_size <= 64 else 64)
        self.corruptions = corruptions
        self.domains = [Domain(c, s) for c in corruptions for s in severities]
        self.code_hash = corruption_code_hash()[:16]
        key = hashlib.sha256(
            repr(
                (clean.name, clean.fingerprint, clean.index.tobytes(), self.code_hash)
                + (clean.profile, seed, jpeg_quality, self.chunk)
            ).encode()
        ).hexdigest()[:16]
        self.cache = cache_root(cache_dir) / "generated" / clean.name / key
        self._tags = {c: corruption_fingerprint(c) for c in corruptions}  # cache folder suffixes

    def labels(self, domain: Domain) -> np.ndarray:
        """int64 labels of the clean samples (the same for every domain)."""
        self._check_domain(domain)
        return self.clean.labels.copy()

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        """uint8 (N, 3, H, W), generating and caching the chunks that hold ``indices``."""
        self._check_domain(domain)
        indices = checked_indices(indices, len(self.clean.labels))
        size = self.clean.image_size
        out = np.empty((len(indices), 3, size, size), dtype=np.uint8)
        chunks = indices // self.chunk
        for c in np.unique(chunks):
            rows = np.flatnonzero(chunks == c)
            out[rows] = self._chunk(domain, int(c))[indices[rows] - c * self.chunk]
        return torch.from_numpy(out)

    def provenance(self) -> dict[str, str]:
        """``source=generated``, the clean source and its fingerprint, profile, seed, seeding,
        and what frost / spatter / JPEG used (textures and hash, OpenCV, codec versions)."""
        return {
            "source": "generated",
            "clean": self.clean.name,
            "clean_fingerprint": self.clean.fingerprint,
            "n_per_domain": str(len(self.clean.labels)),
            "profile": self.clean.profile,
            "jpeg_replay": str(self.jpeg_quality or "none"),
            "seed": str(self.seed),
            "seeding": "per sample (seed, corruption, severity, index)",
            "corruption_code": self.code_hash,
            **corruption_provenance(self.corruptions),
        }

    def _check_domain(self, domain: Domain) -> None:
        if domain.corruption not in self._tags:  # checked (and tagged) at construction
            check_generatable([domain.corruption])
        if not 1 <= domain.severity <= 5:
            raise ValueError(f"severity must be in 1..5, got {domain.severity} ({domain})")

    def _chunk(self, domain: Domain, c: int) -> np.ndarray:
        """Rows ``[c * chunk, (c + 1) * chunk)`` of a domain, memory-mapped from the cache."""
        if domain.corruption not in self._tags:
            self._tags[domain.corruption] = corruption_fingerprint(domain.corruption)
        tag = self._tags[domain.corruption]
        folder = f"{domain.name}-{tag}" if tag else domain.name
        path = self.cache / folder / f"{c:05d}.npy"
        if not path.exists():
            positions = np.arange(c * self.chunk, min((c + 1) * self.chunk, len(self.clean.labels)))
            images = corrupt_samples(
                self.clean, positions, domain.corruption, domain.severity, self.seed
            )
            if self.jpeg_quality:
                images = jpeg_replay(images, self.jpeg_quality)
            path.parent.mkdir(parents=True, exist_ok=True)
            save_npy(path, images.numpy())  # atomic: parallel runs never read half a file
        return np.load(path, mmap_mode="r", allow_pickle=False)
