"""``markov``: labels follow a Markov chain over classes with self-transition probability rho.

After UniTTA (Du et al., arXiv 2407.20080), whose sampler draws (domain, class) from a chain
with diagonal "correlation factor" and uniform off-diagonal; here over classes only, and without
replacement, so the stream is a permutation. From class a the next class is c with probability
proportional to ``n_c * (rho if c == a else (1 - rho) / (K - 1))``, n_c the samples of class c
not yet emitted. So with balanced remaining counts the chain stays with probability rho; at
rho = 1/K every class is weighted by its remaining count, which is *exactly* a uniform random
permutation (i.i.d.); at rho = 1 the chain only leaves an exhausted class, giving ``sorted``.
Unlike the Dirichlet samplers, rho moves continuously between the two (specs/streams.md).
Samples within a class are emitted in random order.
"""

from __future__ import annotations

import numpy as np

from ._pieces import group_by_class


def order(labels: np.ndarray, rng: np.random.Generator, rho: float) -> np.ndarray:
    """A permutation whose class sequence is the count-weighted Markov chain above.

    Args:
        labels: Labels of the pool, in dataset order.
        rng: The visit's generator.
        rho: Self-transition probability in [0, 1]; 1/K is i.i.d., 1 is sorted.
    """
    positions, starts, counts = group_by_class(labels, rng, shuffle=True)
    seq = _class_sequence(counts, float(rho), rng)
    # The i-th time class c appears it takes the i-th of c's (shuffled) samples.
    by_class = np.argsort(seq, kind="stable")
    rank = np.empty(len(seq), dtype=np.int64)
    rank[by_class] = np.arange(len(seq)) - starts[seq[by_class]]
    return positions[starts[seq] + rank]


def _class_sequence(counts: np.ndarray, rho: float, rng: np.random.Generator) -> np.ndarray:
    """Class index of every step. O(1) per step: a pool of remaining class tokens with
    swap-removal gives draws proportional to the remaining counts (rejecting the current class
    for a jump), which keeps 50k steps well under 0.1 s in plain Python."""
    k, n = len(counts), int(counts.sum())
    off = (1.0 - rho) / (k - 1) if k > 1 else 0.0
    first = (np.cumsum(counts) - counts).tolist()
    pool = np.repeat(np.arange(k), counts).tolist()
    # where[c]: pool slots holding class c; slot[p]: position of pool slot p inside where[c].
    where = [list(range(s, s + c)) for s, c in zip(first, counts.tolist(), strict=True)]
    slot = (np.arange(n) - np.repeat(first, counts)).tolist()
    left = counts.astype(np.int64).tolist()
    u_stay, u_pick = rng.random(n).tolist(), rng.random(n).tolist()
    seq = [0] * n

    def remove(c: int) -> None:
        # Drop one token of class c: tokens of one class are interchangeable.
        p = where[c].pop()
        last = len(pool) - 1
        if p != last:
            moved = pool[last]
            pool[p] = moved
            where[moved][slot[last]] = p
            slot[p] = slot[last]
        pool.pop()
        left[c] -= 1

    cur = pool[int(u_pick[0] * n)]
    for t in range(n):
        if t:
            remaining = n - t
            n_cur = left[cur]
            stay_w, jump_w = rho * n_cur, off * (remaining - n_cur)
            if n_cur == remaining or (n_cur and u_stay[t] * (stay_w + jump_w) < stay_w):
                pass
            else:
                cur = _jump(pool, cur, left, u_pick[t], rng)
        seq[t] = cur
        remove(cur)
    return np.asarray(seq, dtype=np.int64)


def _jump(pool: list[int], cur: int, left: list[int], u: float, rng: np.random.Generator) -> int:
    """A class != cur drawn proportionally to its remaining count."""
    size = len(pool)
    for _ in range(8):  # rejection of the current class; expected tries size / (size - n_cur)
        c = pool[int(u * size)]
        if c != cur:
            return c
        u = rng.random()
    weights = np.asarray(left, dtype=np.float64)
    weights[cur] = 0.0
    return int(rng.choice(len(left), p=weights / weights.sum()))
