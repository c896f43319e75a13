"""``dirichlet_rotta``: RoTTA's PTTA label sampler (Yuan et al., CVPR 2023, Sec. 3 / code
``LabelDirichletDomainSequence``).

For every class, proportions p ~ Dirichlet(gamma * 1_S) over S slots (S = K classes, capped at
``max_slots`` = 100 as in the official code); the class's samples are cut contiguously at
``floor(cumsum(p) * n_k)`` and piece s goes to slot s. Slots are emitted in order, the class
pieces of a slot in random order. Unlike NOTE's sampler there is no capacity balancing and no
minimum chunk size, which is why the two disagree strongly at 1000 classes (specs/streams.md).
RoTTA's gamma is ttabench's ``delta``. Deviation: the official draw is unseeded (global RNG);
here it comes from the visit's generator, so the stream is reproducible.
"""

from __future__ import annotations

import numpy as np

from ._pieces import emit, group_by_class, split_sizes


def order(
    labels: np.ndarray,
    rng: np.random.Generator,
    delta: float,
    max_slots: int = 100,
    shuffle_within_class: bool = False,
) -> np.ndarray:
    """RoTTA's slot sampler.

    Args:
        labels: Labels of the pool, in dataset order.
        rng: The visit's generator.
        delta: Dirichlet concentration (RoTTA's gamma, official default 0.1).
        max_slots: Cap on the number of slots (official: 100).
        shuffle_within_class: Shuffle each class before cutting it. The official code keeps
            dataset order (default False, faithful).
    """
    positions, starts, counts = group_by_class(labels, rng, shuffle=shuffle_within_class)
    n_slots = min(len(counts), max_slots)
    p = rng.dirichlet(np.full(n_slots, float(delta)), size=len(counts))
    return emit(positions, starts, split_sizes(p, counts), rng)
