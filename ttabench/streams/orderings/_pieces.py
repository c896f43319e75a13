"""Shared helpers of the block orderings (``dirichlet``, ``dirichlet_rotta``, ``sorted``).

The block samplers of NOTE (Gong et al., NeurIPS 2022) and RoTTA (Yuan et al., CVPR 2023) both
cut each class's index list into contiguous pieces, assign piece j to chunk (slot) j, then emit
chunks in order with the class pieces of a chunk in random order. These helpers do the grouping,
the contiguous cut and the emission with array operations only (no per-sample Python loop).
"""

from __future__ import annotations

import numpy as np


def group_by_class(
    labels: np.ndarray, rng: np.random.Generator, shuffle: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Positions grouped by class (classes ascending).

    Args:
        labels: Labels of the pool, in dataset order.
        rng: Generator used when ``shuffle``.
        shuffle: Shuffle the positions within each class; otherwise keep dataset order.

    Returns:
        ``(positions, starts, counts)``: class c (the c-th distinct label) occupies
        ``positions[starts[c]:starts[c] + counts[c]]``.
    """
    n = len(labels)
    if shuffle:
        perm = rng.permutation(n)
        positions = perm[np.argsort(labels[perm], kind="stable")]
    else:
        positions = np.argsort(labels, kind="stable")
    _, counts = np.unique(labels, return_counts=True)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1])).astype(np.int64)
    return positions.astype(np.int64), starts, counts.astype(np.int64)


def split_sizes(p: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Sizes of the contiguous pieces when class k is cut at ``floor(cumsum(p[k]) * n_k)``.

    This is the cut of both official samplers (``(cumsum(p) * n).astype(int)[:-1]``); the last
    cut is forced to ``n_k`` so rounding in ``cumsum`` never loses a sample.
    """
    counts = np.asarray(counts)
    cuts = np.floor(np.cumsum(p, axis=-1) * counts[..., None]).astype(np.int64)
    cuts = np.minimum(cuts, counts[..., None])
    cuts[..., -1] = counts
    return np.diff(cuts, axis=-1, prepend=0)


def expand(positions: np.ndarray, src: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenate ``positions[src[i]:src[i] + lengths[i]]`` over i, without a Python loop."""
    out_start = np.cumsum(lengths) - lengths
    flat = np.repeat(src - out_start, lengths) + np.arange(int(lengths.sum()), dtype=np.int64)
    return positions[flat]


def emit(
    positions: np.ndarray, starts: np.ndarray, sizes: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Emit chunks in order; inside a chunk, its class pieces in random order, each contiguous.

    Args:
        positions: Output of :func:`group_by_class`.
        starts: Output of :func:`group_by_class`.
        sizes: ``(n_classes, n_chunks)`` piece sizes; row k sums to the size of class k and
            piece j of class k is the j-th contiguous piece of that class.
        rng: Generator for the within-chunk class order.
    """
    offsets = np.cumsum(sizes, axis=1) - sizes
    k, j = np.nonzero(sizes)
    # Sort by chunk, then by a random key: a uniform random class order inside every chunk.
    key = np.lexsort((rng.random(len(k)), j))
    k, j = k[key], j[key]
    return expand(positions, starts[k] + offsets[k, j], sizes[k, j])
