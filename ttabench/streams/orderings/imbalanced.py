"""``imbalanced``: SAR's online imbalanced label distribution shift (Niu et al., ICLR 2023,
Sec. 5 "online imbalanced label distribution shifts"; after Bai et al., NeurIPS 2022).

The stream of T steps is cut into K stages of about T/K steps (K = classes in the pool); a
random class order pi is drawn; in stage i the label is drawn from q_i(c) = IR * m if
c = pi(i) else m, with m = 1 / (IR + K - 1); the sample is then drawn uniformly *with
replacement* among that class's samples. IR = 1 is i.i.d. over classes. The official generator
only handles ImageNet (K = 1000, T = 100,000); this one works for any labels and length.
"""

from __future__ import annotations

import numpy as np

from ._pieces import group_by_class


def order(
    labels: np.ndarray,
    rng: np.random.Generator,
    imbalance_ratio: float,
    length: int | None = None,
) -> np.ndarray:
    """Positions drawn with replacement following the K-stage imbalanced label schedule.

    Args:
        labels: Labels of the pool, in dataset order.
        rng: The visit's generator.
        imbalance_ratio: IR >= 1, how much more likely the stage's class is than any other
            (SAR's default 500000: almost pure class order).
        length: Stream length T (default: the pool size).
    """
    positions, starts, counts = group_by_class(labels, rng, shuffle=False)
    n_classes = len(counts)
    steps = len(labels) if length is None else int(length)
    stage = np.arange(steps, dtype=np.int64) * n_classes // steps
    favoured = rng.permutation(n_classes)[stage]
    if n_classes == 1:
        cls = favoured
    else:
        m = 1.0 / (float(imbalance_ratio) + n_classes - 1)
        is_favoured = rng.random(steps) < float(imbalance_ratio) * m
        # Uniform over the K - 1 other classes: draw from 0..K-2 and skip the favoured one.
        other = rng.integers(0, n_classes - 1, size=steps)
        other += other >= favoured
        cls = np.where(is_favoured, favoured, other)
    return positions[starts[cls] + rng.integers(0, counts[cls])]
