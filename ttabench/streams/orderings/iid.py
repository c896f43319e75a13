"""``iid``: a seeded uniform permutation of the visit's samples (the standard TTA protocol).

This is what Tent/NOTE's "random order" and TTAB's ``intra_domain_shuffle`` do per domain, and
what SAR's ``mix_shifts`` / the Doebler benchmark's ``mixed_domains`` do over a pool of domains.
"""

from __future__ import annotations

import numpy as np


def order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A uniform random permutation of ``range(len(labels))``."""
    return rng.permutation(len(labels)).astype(np.int64)
