"""Image corruptions of Hendrycks & Dietterich, ICLR 2019, as batched torch ops.

"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (CIFAR-10-C,
ImageNet-C) rebuilt for on-the-fly generation: ``corrupt(images, name, severity, generator,
profile)`` on uint8 (B, 3, H, W) batches on any device, seeded per sample with
``sample_generators``. Fidelity per corruption (exact, <= 1 grey level, or exact in
distribution) is documented in each family module and measured by ``tests/test_corruptions.py``.
frost needs its texture photographs at run time and spatter OpenCV (both optional installs).
"""

from .api import (
    available_corruptions,
    corrupt,
    corruption_fingerprint,
    corruption_provenance,
    sample_generators,
)
from .registry import REGISTRY, CorruptionUnavailableError, unavailable_reason
from .tables import COMMON_CORRUPTIONS, EXTRA_CORRUPTIONS, GROUPS, PROFILES, TABLES

__all__ = [
    "COMMON_CORRUPTIONS",
    "EXTRA_CORRUPTIONS",
    "GROUPS",
    "PROFILES",
    "REGISTRY",
    "TABLES",
    "CorruptionUnavailableError",
    "available_corruptions",
    "corrupt",
    "corruption_fingerprint",
    "corruption_provenance",
    "sample_generators",
    "unavailable_reason",
]
