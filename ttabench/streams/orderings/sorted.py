"""``sorted``: one contiguous block per class, classes in random order.

The delta -> 0 limit of both Dirichlet samplers, and what the Doebler/Marsden benchmark's
``correlated`` settings do by default (``DELTA_DIRICHLET = 0``: the shuffled domain sorted by
label). As there, the order inside a class block is random.
"""

from __future__ import annotations

import numpy as np

from ._pieces import expand, group_by_class


def order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Class blocks in random class order, samples shuffled within each block."""
    positions, starts, counts = group_by_class(labels, rng, shuffle=True)
    classes = rng.permutation(len(counts))
    return expand(positions, starts[classes], counts[classes])
