"""``dirichlet``: NOTE's temporally correlated label sampler (Gong et al., NeurIPS 2022,
Sec. 4.1 / ``--tgt_train_dist 4``), also used by TTAB, the Doebler/Marsden benchmark
(``sort_by_dirichlet``) and UnMix-TNS.

K chunks (K = classes in the pool), capacity N/K each. For every class k in turn: shuffle its
samples, draw p ~ Dirichlet(delta * 1_K), zero p_j for chunks already holding >= N/K samples,
renormalise, cut the class contiguously at ``floor(cumsum(p) * n_k)`` and append piece j to
chunk j. The whole draw is repeated until every chunk holds at least ``min_chunk`` samples
(10 in NOTE and Doebler, 5 in TTAB). Chunks are emitted in order, the class pieces of a chunk in
random order, each piece contiguous. NOTE's beta is ttabench's ``delta``.

Deviation, for robustness only: at tiny delta the masked mass can underflow to zero (NaN in the
official code); the renormalised masked vector is then drawn directly from its exact law,
Dirichlet(delta * 1) over the open chunks.

Why this is fast: the class loop is inherently sequential (the capacity mask depends on the
classes before), but each step is a handful of length-K array operations, all Dirichlet draws
of an attempt are made at once, and an attempt is abandoned as soon as the samples left cannot
fill the chunks that are still short of ``min_chunk``.
"""

from __future__ import annotations

import numpy as np

from ._pieces import emit, group_by_class

# Below this the masked mass has lost precision (subnormal floats): redraw it exactly instead.
_TINY = 1e-250


def order(
    labels: np.ndarray,
    rng: np.random.Generator,
    delta: float,
    min_chunk: int = 10,
    max_tries: int = 1000,
) -> np.ndarray:
    """NOTE's chunk sampler.

    Args:
        labels: Labels of the pool, in dataset order.
        rng: The visit's generator.
        delta: Dirichlet concentration (NOTE's beta, official default 0.1).
        min_chunk: Minimum samples per chunk; the draw is repeated until it holds.
        max_tries: Attempts before giving up (the Doebler code gives up after 120 s instead).

    Raises:
        ValueError: ``min_chunk`` cannot be met (K * min_chunk > N), or no attempt met it
            within ``max_tries``.
    """
    positions, starts, counts = group_by_class(labels, rng, shuffle=True)
    n, k = len(labels), len(counts)
    if k * min_chunk > n:
        raise ValueError(
            f"dirichlet ordering: {k} chunks of at least min_chunk={min_chunk} samples need "
            f"{k * min_chunk} samples but the visit has {n}; lower stream.min_chunk "
            f"(at most {n // k} here) or use more samples per domain"
        )
    for _ in range(max_tries):
        sizes = _attempt(counts, rng, float(delta), n / k, min_chunk)
        if sizes is not None:
            return emit(positions, starts, sizes, rng)
    raise ValueError(
        f"dirichlet ordering: no draw gave every one of the {k} chunks at least "
        f"min_chunk={min_chunk} samples in max_tries={max_tries} attempts (delta={delta}, "
        f"{n} samples); lower stream.min_chunk or raise stream.max_tries"
    )


def _attempt(
    counts: np.ndarray, rng: np.random.Generator, delta: float, capacity: float, min_chunk: int
) -> np.ndarray | None:
    """One draw of the (class, chunk) piece sizes, or None if a chunk will end below min_chunk."""
    k = len(counts)
    p = rng.dirichlet(np.full(k, delta), size=k)
    sizes = np.zeros((k, k), dtype=np.int64)
    fill = np.zeros(k, dtype=np.int64)
    remaining = int(counts.sum())
    for c in range(k):
        open_ = fill < capacity
        q = p[c] * open_
        total = q.sum()
        if total < _TINY:
            # At tiny delta nearly all mass can sit on full chunks and the rest underflow.
            # The renormalised sub-vector of a Dirichlet over the open chunks is itself
            # Dirichlet(delta * 1) over them (aggregation property): draw it directly.
            q = np.zeros(k)
            q[open_] = rng.dirichlet(np.full(int(open_.sum()), delta))
            total = 1.0
        cuts = np.floor(np.cumsum(q) / total * counts[c]).astype(np.int64)
        np.minimum(cuts, counts[c], out=cuts)
        cuts[-1] = counts[c]
        row = np.diff(cuts, prepend=0)
        sizes[c] = row
        fill += row
        remaining -= int(counts[c])
        # Chunks only grow, so if the samples left cannot lift every short chunk to
        # min_chunk, this attempt is already lost.
        if remaining < np.maximum(min_chunk - fill, 0).sum():
            return None
    return sizes
