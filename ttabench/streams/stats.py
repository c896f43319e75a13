"""Label statistics of a stream: what makes streams comparable across code bases.

specs/streams.md ("Per-batch statistics to log"): distinct classes per batch, majority-class
fraction, label entropy (nats), plus the mean run length of identical consecutive labels used in
its measurement table. The same ``delta`` yields very different correlation in different
samplers, so these numbers, not the knob, describe a stream.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..domains import Domain
from .plan import StreamPlan


def label_stats(labels: np.ndarray) -> dict[str, float]:
    """Statistics of one group of labels (e.g. one batch).

    Returns:
        ``n_classes`` (distinct labels), ``majority_frac`` (share of the most frequent label)
        and ``label_entropy`` (empirical entropy in nats). An empty group gives zeros.
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return {"n_classes": 0, "majority_frac": 0.0, "label_entropy": 0.0}
    _, counts = np.unique(labels, return_counts=True)
    p = counts / labels.size
    return {
        "n_classes": int(len(counts)),
        "majority_frac": float(p.max()),
        "label_entropy": float(-(p * np.log(p)).sum()),
    }


def batch_label_stats(
    labels: np.ndarray, batch_starts: np.ndarray, keep: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """:func:`label_stats` of every batch at once (vectorised; no loop over batches).

    Args:
        labels: Label of every stream position.
        batch_starts: Batch boundaries (length ``n_batches + 1``, no empty batch).
        keep: Positions to count (the test set's samples: outliers say nothing of the label
            ordering); a batch with none kept gets NaN (no labels to describe).

    Returns:
        Arrays of length ``n_batches``: ``n_classes``, ``majority_frac``, ``label_entropy``.
    """
    labels = np.asarray(labels)
    starts = np.asarray(batch_starts, dtype=np.int64)
    if keep is not None and not np.all(keep):
        kept = np.add.reduceat(np.asarray(keep, dtype=np.int64), starts[:-1])
        some = kept > 0
        inner = batch_label_stats(labels[keep], np.r_[0, np.cumsum(kept[some])])
        out = {k: np.full(len(kept), np.nan) for k in inner}
        for k, v in inner.items():
            out[k][some] = v
        return out
    sizes = np.diff(starts)
    n_batches = len(sizes)
    _, compact = np.unique(labels, return_inverse=True)
    n_labels = int(compact.max()) + 1 if labels.size else 1
    batch = np.repeat(np.arange(n_batches, dtype=np.int64), sizes)
    # Count every (batch, label) pair; the sorted keys group the pairs by batch.
    keys, counts = np.unique(batch * n_labels + compact.ravel(), return_counts=True)
    owner = keys // n_labels
    first = np.searchsorted(owner, np.arange(n_batches))
    p = counts / sizes[owner]
    return {
        "n_classes": np.bincount(owner, minlength=n_batches),
        "majority_frac": np.maximum.reduceat(counts, first) / sizes,
        "label_entropy": -np.bincount(owner, weights=p * np.log(p), minlength=n_batches),
    }


def mean_run_length(labels: np.ndarray) -> float:
    """Mean length of the runs of identical consecutive labels (N / number of runs)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return 0.0
    return labels.size / (1 + int(np.count_nonzero(labels[1:] != labels[:-1])))


def plan_stats(plan: StreamPlan, labels: Callable[[Domain], np.ndarray]) -> dict[str, np.ndarray]:
    """Per-batch statistics of a plan: :func:`batch_label_stats` plus ``n_domains``."""
    y = plan.labels_of(labels)
    stats = batch_label_stats(y, plan.batch_starts, ~plan.outlier_mask())
    stats["n_domains"] = _domains_per_batch(plan)
    return stats


def _domains_per_batch(plan: StreamPlan) -> np.ndarray:
    """Distinct test domains per batch (an outlier domain counts as the one it is mixed into)."""
    _, group_of = plan.inlier_groups()
    return batch_label_stats(group_of[plan.domain_ids], plan.batch_starts)["n_classes"]


def summarize(plan: StreamPlan, labels: Callable[[Domain], np.ndarray]) -> dict[str, float]:
    """Means over batches of :func:`plan_stats`, the mean run length and the sizes of the plan.

    Means are over all batches, including a final partial one, as a DataLoader without
    ``drop_last`` would produce them.
    """
    y = plan.labels_of(labels)
    inliers = ~plan.outlier_mask()
    per_batch = batch_label_stats(y, plan.batch_starts, inliers)
    per_batch["n_domains"] = _domains_per_batch(plan)
    out: dict[str, float] = {"samples": float(len(plan)), "batches": float(plan.n_batches)}
    out.update({k: float(np.nanmean(v)) for k, v in per_batch.items()})
    out["run_length"] = mean_run_length(y[inliers])
    out["outliers"] = float((~inliers).sum())
    out["resets"] = float(plan.resets.sum())
    return out
