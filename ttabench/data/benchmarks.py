"""The corruption benchmarks of Hendrycks & Dietterich (ICLR 2019) behind one Hydra target.

"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations": CIFAR-10-C,
CIFAR-100-C, ImageNet-C and Tiny-ImageNet-C, plus Fashion-MNIST-C (same recipe, CIFAR profile).
``configs/dataset/{cifar10c,cifar100c,imagenetc,tinyimagenetc,fashionmnistc}.yaml`` call
:func:`corruption_benchmark`, which serves either the published files (``source=files``:
:class:`~ttabench.data.cifar_c.CifarC`, :class:`~ttabench.data.folder_c.FolderC`) or domains
generated from the clean test set (``source=generate``:
:class:`~ttabench.data.generated.GeneratedCorruptions`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

from ttabench.data.base import CorruptionDataset
from ttabench.data.cifar_c import CifarC
from ttabench.data.clean import load_clean
from ttabench.data.corruptions import COMMON_CORRUPTIONS
from ttabench.data.folder_c import FolderC
from ttabench.data.generated import JPEG_QUALITY, GeneratedCorruptions


class Benchmark(NamedTuple):
    """A benchmark's folder name, file layout, classes and clean source (None: no generator)."""

    folder: str
    layout: str  # "npy" (CIFAR-10-C) or "jpeg" (ImageNet-C folders)
    num_classes: int
    clean: str | None


BENCHMARKS: dict[str, Benchmark] = {
    "cifar10c": Benchmark("CIFAR-10-C", "npy", 10, "cifar10"),
    "cifar100c": Benchmark("CIFAR-100-C", "npy", 100, "cifar100"),
    "imagenetc": Benchmark("ImageNet-C", "jpeg", 1000, "imagenet"),
    # No generator: make_tinyimagenet_c.py has its own 64 px parameter table, which the
    # corruption package does not carry, and its clean images are ImageNet bounding-box crops.
    "tinyimagenetc": Benchmark("Tiny-ImageNet-C", "jpeg", 200, None),
    "fashionmnistc": Benchmark("Fashion-MNIST-C", "npy", 10, "fashion_mnist"),
    "embeddedc": Benchmark("Embedded-C", "npy", 10, "embedded"),
}
SOURCES = ("files", "generate")


def corruption_benchmark(
    benchmark: str,
    source: str = "files",
    root: str | os.PathLike | None = None,
    corruptions: Sequence[str] = COMMON_CORRUPTIONS,
    severity: int | Sequence[int] = 5,
    n_per_domain: int | None = None,
    id_list: str | os.PathLike | None = None,
    seed: int = 0,
    cache_dir: str | os.PathLike | None = None,
    name: str | None = None,
    workers: int | None = None,
) -> CorruptionDataset:
    """A corruption benchmark from its published files or generated from its clean test set.

    Args:
        benchmark: A key of :data:`BENCHMARKS` (``cifar10c``, ``imagenetc``, ...).
        source: ``files`` (read ``root/<folder>``) or ``generate`` (corrupt the clean test set
            found under ``root``, e.g. ``root/cifar-10-batches-py``).
        root: Data root; None: ``$TTA_DATA_ROOT`` (Fashion-MNIST: also Debian's folder).
        corruptions: Corruption names in stream order (default: the canonical 15).
        severity: One severity 1-5, or a list of them.
        n_per_domain: Samples per domain (None: all; ImageNet-C preset 5000, class-balanced,
            or the first ``n`` of ``id_list``).
        id_list: ImageNet only: RobustBench-style ``wnid/ILSVRC2012_val_XXXXXXXX.JPEG`` list.
        seed: Corruption seed (``generate`` only; published files are unseeded).
        cache_dir: Cache of generated domains (default ``$TTABENCH_CACHE``).
        name: Recorded dataset name (default: ``benchmark``).
        workers: JPEG folders only: threads decoding a batch (None: the CPUs, at most 8).

    Raises:
        FileNotFoundError: Data missing under the root (the message names the layout).
        ValueError: Unknown benchmark, source or corruption, or a malformed file.
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; valid: {', '.join(BENCHMARKS)}")
    if source not in SOURCES:
        raise ValueError(f"dataset.source must be one of {SOURCES}, got {source!r}")
    spec = BENCHMARKS[benchmark]
    name = name or benchmark
    corruptions = list(corruptions) if not isinstance(corruptions, str) else [corruptions]
    severity = severity if isinstance(severity, int) else list(severity)
    if source == "generate":
        if spec.clean is None:
            raise ValueError(
                f"{benchmark} cannot be generated: make_tinyimagenet_c.py's 64 px parameter "
                "table is not in ttabench.data.corruptions; use dataset.source=files"
            )
        clean = load_clean(spec.clean, root, n_per_domain, id_list, seed)
        quality = JPEG_QUALITY if spec.layout == "jpeg" else None
        return GeneratedCorruptions(clean, corruptions, severity, seed, quality, cache_dir, name)
    if spec.layout == "npy":
        if id_list:
            raise ValueError(f"dataset.id_list applies to ImageNet-C folders, not {benchmark}")
        classes = spec.num_classes
        return CifarC(root, spec.folder, corruptions, severity, n_per_domain, classes, name)
    return FolderC(
        root,
        spec.folder,
        corruptions,
        severity,
        n_per_domain,
        id_list,
        spec.num_classes,
        name,
        workers,
    )
