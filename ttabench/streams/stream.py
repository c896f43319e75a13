"""A stream = domain schedule x label ordering x batch size (specs/streams.md, issue #3).

:class:`Stream` holds the knobs (one Hydra preset in ``configs/stream/``) and turns the label
arrays of the configured domains into a :class:`~ttabench.streams.plan.StreamPlan`: a pure
function of (labels, seed, knobs), no image touched. The schedule
(``ttabench/streams/schedules/``) splits the domains into visits; the ordering
(``ttabench/streams/orderings/``) orders each visit with its own generator; batches are cut
within each visit.

Seeding (specs/streams.md, pitfalls): every visit gets a generator derived from (stream seed,
CRC-32 of the visit's domain names, occurrence number of that visit), never from its position
in the schedule and never from the global RNG. A domain therefore gets the same order whether
it runs alone or third in a continual stream, two domains with identical labels (all CIFAR-10-C
corruptions) get different class sequences, and the repeated visits of ``gradual`` differ.
The stream seed is separate from the method seed, so every method sees the same order.
"""

from __future__ import annotations

import hashlib
import math
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..domains import Domain
from . import _plugins, orderings, schedules
from .outliers import Outliers, add_outliers
from .plan import StreamPlan

# Purpose tags mixed into the seed, so the subsample of a domain, its order and the placement of
# its outliers are independent.
_ORDER, _SUBSAMPLE, _OUTLIERS = 0, 1, 2


class Stream:
    """Knobs of a test stream, and :meth:`build` to realise it for a dataset.

    Args:
        domains: Domain schedule: ``single`` (reset before each domain), ``continual``,
            ``mixed`` (all domains pooled) or ``gradual`` (severities 1..5..1), or any module
            in ``ttabench/streams/schedules/``.
        labels: Label ordering: ``iid``, ``dirichlet`` (NOTE), ``dirichlet_rotta`` (RoTTA's
            PTTA), ``sorted``, ``imbalanced`` (SAR), ``markov``, or any module in
            ``ttabench/streams/orderings/``.
        batch_size: Samples per batch (>= 1); the last batch of a visit may be smaller and is
            kept.
        seed: Stream seed (>= 0), separate from the method seed (``stream_seed`` in run.yaml).
        delta: Concentration of both Dirichlet orderings (> 0); NOTE's beta and RoTTA's gamma.
            Official default 0.1 in both. Smaller is more correlated; ``sorted`` is the limit.
        min_chunk: ``dirichlet`` only: minimum samples per chunk, the draw is repeated until it
            holds (NOTE / Doebler: 10; TTAB: 5; 0 disables).
        max_tries: ``dirichlet`` only: draws before giving up with an error (default 1000).
        max_slots: ``dirichlet_rotta`` only: cap on the number of slots (RoTTA: 100).
        shuffle_within_class: ``dirichlet_rotta`` only: shuffle each class before cutting it
            into slots; RoTTA keeps dataset order (default False, faithful).
        imbalance_ratio: ``imbalanced`` only: SAR's IR >= 1 (1 is i.i.d.; SAR's default
            500000 is almost pure class order).
        rho: ``markov`` only: self-transition probability in [0, 1]; 1/K is i.i.d., 1 sorted
            (no official default; 0.9 gives runs of about 10 samples).
        n_samples: Samples per domain (None: all). Permutation orderings use a seeded random
            subset of each domain, the same in every schedule and for every domain with the
            same labels (all corruptions of one test set), like Doebler's ``NUM_EX``;
            ``imbalanced`` draws ``n_samples`` per pooled domain with replacement (SAR: 100000).
        outliers: ``{ratio, source, mix}``: outliers mixed into every visit
            (:mod:`ttabench.streams.outliers`); ``ratio`` 0 (default) adds none.
        **extra: Knobs of orderings or schedules added as plugins; each must be a parameter of
            some ordering or schedule.

    Raises:
        ValueError: Any knob is invalid; the message names it and the valid range or names.
    """

    def __init__(
        self,
        domains: str = "single",
        labels: str = "iid",
        batch_size: int = 64,
        seed: int = 0,
        delta: float = 0.1,
        min_chunk: int = 10,
        max_tries: int = 1000,
        max_slots: int = 100,
        shuffle_within_class: bool = False,
        imbalance_ratio: float = 500000.0,
        rho: float = 0.9,
        n_samples: int | None = None,
        outliers: Any = None,
        **extra: Any,
    ) -> None:
        self._visits = schedules.get(domains)
        self._order = orderings.get(labels)
        self.domains, self.labels = domains, labels
        self.batch_size = _integer("batch_size", batch_size, 1)
        self.seed = _integer("seed", seed, 0)
        self.n_samples = None if n_samples is None else _integer("n_samples", n_samples, 1)
        self.outliers = Outliers.from_knob(outliers)
        self.outliers.check_ordering(labels)
        self.knobs: dict[str, Any] = {
            "delta": _real("delta", delta, lambda v: v > 0, "> 0 (labels=sorted is the limit)"),
            "min_chunk": _integer("min_chunk", min_chunk, 0),
            "max_tries": _integer("max_tries", max_tries, 1),
            "max_slots": _integer("max_slots", max_slots, 1),
            "shuffle_within_class": _boolean("shuffle_within_class", shuffle_within_class),
            "imbalance_ratio": _real("imbalance_ratio", imbalance_ratio, lambda v: v >= 1, ">= 1"),
            "rho": _real("rho", rho, lambda v: 0 <= v <= 1, "in [0, 1]"),
        }
        plugin_knobs = set().union(
            *(_plugins.accepted(orderings.get(n), 2) for n in orderings.names()),
            *(_plugins.accepted(schedules.get(n), 1) for n in schedules.names()),
        )
        unknown = sorted(set(extra) - (plugin_knobs - {"length"}))
        if unknown:
            raise ValueError(f"unknown stream knob(s) {unknown}; known: {sorted(self.config())}")
        self.knobs.update(extra)

    def config(self) -> dict[str, Any]:
        """All knobs as a flat dict (for logging next to results)."""
        base = {"domains": self.domains, "labels": self.labels, "batch_size": self.batch_size}
        mixed = {f"outliers.{k}": v for k, v in vars(self.outliers).items()}
        return base | {"seed": self.seed, "n_samples": self.n_samples} | self.knobs | mixed

    def __repr__(self) -> str:
        return "Stream(" + ", ".join(f"{k}={v!r}" for k, v in self.config().items()) + ")"

    def build(
        self, domains: Sequence[Domain], labels: Callable[[Domain], np.ndarray]
    ) -> StreamPlan:
        """Realise the stream for a dataset.

        Args:
            domains: Configured domains, in order (``gradual`` also visits the other
                severities of their corruptions).
            labels: ``labels(domain)``: int64 labels of all samples of a domain, dataset order.

        Returns:
            The batched order of (domain, index) pairs. The domain table lists domains in
            order of first visit. A pooled visit (``mixed``) presents its pool to the ordering
            in "dataset order" with domains interleaved (index 0 of every domain, then 1, ...).
            With ``outliers``, ``labels`` must also answer for the outlier domains
            ``Domain(corruption, severity, source)``; they follow their domain in the table.

        Raises:
            ValueError: No domains, a domain without samples or with non-integer labels,
                ``n_samples`` larger than a domain, or an ordering that cannot be realised
                (e.g. ``min_chunk`` impossible for the visit's size).
        """
        domains = [Domain(*d) for d in domains]
        if not domains:
            raise ValueError("a stream needs at least one domain")
        visits = _plugins.call(self._visits, (domains,), self.knobs)
        with_replacement = orderings.draws_with_replacement(self._order)
        table: dict[Domain, int] = {}
        pools: dict[Domain, tuple[np.ndarray, np.ndarray]] = {}
        seen: Counter[str] = Counter()
        ids, idx, starts, resets = [], [], [0], []
        for visit in visits:
            key = "|".join(d.name for d in visit.domains)
            rng = self._generator(key, seen[key], _ORDER)
            seen[key] += 1
            parts = []
            for d in visit.domains:
                if d not in pools:
                    pools[d] = self._pool(d, labels, subsample=not with_replacement)
                parts.append((table.setdefault(d, len(table)), *pools[d]))
            pool_ids = np.concatenate([np.full(len(i), t, dtype=np.int64) for t, i, _ in parts])
            pool_idx = np.concatenate([i for _, i, _ in parts])
            pool_y = np.concatenate([y for _, _, y in parts])
            if len(parts) > 1:
                # A pool's "dataset order" interleaves its domains (index 0 of every domain,
                # then index 1, ...), so orderings that keep dataset order within a class
                # (dirichlet_rotta's default) still mix domains inside a batch.
                inter = np.lexsort((pool_ids, pool_idx))
                pool_ids, pool_idx, pool_y = pool_ids[inter], pool_idx[inter], pool_y[inter]
            knobs = dict(self.knobs)
            if with_replacement:
                per_domain = self.n_samples or 0
                knobs["length"] = per_domain * len(visit.domains) or len(pool_y)
            pos = _plugins.call(self._order, (pool_y, rng), knobs)
            pos = _check_order(np.asarray(pos), len(pool_y), with_replacement, self.labels)
            visit_ids, visit_idx = pool_ids[pos], pool_idx[pos]
            if self.outliers.active:
                rng_out = self._generator(key, seen[key] - 1, _OUTLIERS)
                visit_ids, visit_idx = add_outliers(
                    self.outliers, visit.domains, visit_ids, visit_idx, table, labels, rng_out
                )
            n0 = starts[-1]
            cuts = np.arange(self.batch_size, len(visit_ids), self.batch_size) + n0
            starts.extend(cuts.tolist() + [n0 + len(visit_ids)])
            resets.extend([visit.reset] + [False] * len(cuts))
            ids.append(visit_ids)
            idx.append(visit_idx)
        return StreamPlan(list(table), np.concatenate(ids), np.concatenate(idx), starts, resets)

    def _pool(
        self, domain: Domain, labels: Callable[[Domain], np.ndarray], subsample: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """(dataset indices, labels) of the samples of ``domain`` the stream may use."""
        y = np.asarray(labels(domain))
        if y.ndim != 1 or y.size == 0 or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(
                f"labels({domain.name}) must be a non-empty 1-D integer array, got "
                f"shape {y.shape} dtype {y.dtype}"
            )
        idx = np.arange(len(y), dtype=np.int64)
        if subsample and self.n_samples is not None and self.n_samples != len(y):
            if self.n_samples > len(y):
                raise ValueError(
                    f"stream.n_samples={self.n_samples} exceeds the {len(y)} samples of "
                    f"{domain.name}; a permutation ordering ({self.labels}) cannot repeat samples"
                )
            # Keyed by the label array, not the domain: domains of one test set (every CIFAR-10-C
            # corruption, every gradual severity) share the subset, as in Doebler's NUM_EX, so
            # their errors are measured on the same images.
            rng = self._generator(hashlib.sha256(y.tobytes()).hexdigest(), 0, _SUBSAMPLE)
            idx = np.sort(rng.choice(len(y), self.n_samples, replace=False))
        return idx, y[idx].astype(np.int64)

    def _generator(self, key: str, occurrence: int, purpose: int) -> np.random.Generator:
        """PCG64 generator keyed by (seed, CRC-32 of ``key``, occurrence, purpose); ``key`` is
        the visit's domain names for orders."""
        entropy = [self.seed, zlib.crc32(key.encode()), occurrence, purpose]
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))


def _check_order(pos: np.ndarray, n: int, with_replacement: bool, name: str) -> np.ndarray:
    """Guard against a faulty ordering plugin: positions in range, a permutation if required."""
    ok = pos.ndim == 1 and np.issubdtype(pos.dtype, np.integer) and len(pos) > 0
    ok = ok and pos.min() >= 0 and pos.max() < n
    if ok and not with_replacement:
        ok = len(pos) == n and bool(np.all(np.bincount(pos, minlength=n) == 1))
    if not ok:
        kind = "positions in range" if with_replacement else "a permutation"
        raise RuntimeError(f"ordering {name!r} did not return {kind} of its {n} samples")
    return pos.astype(np.int64)


def _integer(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"stream.{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _real(name: str, value: Any, ok: Callable[[float], bool], rule: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise ValueError(f"stream.{name} must be a number {rule}, got {value!r}")
    if not (math.isfinite(value) and ok(float(value))):
        raise ValueError(f"stream.{name} must be {rule}, got {value!r}")
    return float(value)


def _boolean(name: str, value: Any) -> bool:
    if not isinstance(value, bool | np.bool_):
        raise ValueError(f"stream.{name} must be true or false, got {value!r}")
    return bool(value)
