"""How well a run told outliers from the test set's own samples (STAMP, Yu et al. ECCV 2024,
Sec. 4.1; official ``get_accuracy`` in ``src/utils/utils.py``).

Scores are in-distribution scores: higher means "more like the classes the model knows"
(STAMP scores baselines by the negative entropy of their prediction). The test set's samples
are the positive class. All three metrics are in percent, like the error.

- AUROC: the probability that a random test sample scores above a random outlier (ties count
  half): the Mann-Whitney statistic, equal to the area under the ROC curve.
- FPR95: the share of outliers accepted at the highest threshold that still accepts 95 % of
  the test samples (the first ROC point with TPR >= 0.95, as OpenOOD and pytorch-ood read it).
- H-score: the harmonic mean of ID accuracy and AUROC, ``2 acc auroc / (acc + auroc)``.
"""

from __future__ import annotations

import numpy as np


def auroc(scores_in: np.ndarray, scores_out: np.ndarray) -> float:
    """AUROC in percent of telling ``scores_in`` (positives) from ``scores_out``; NaN when
    either side is empty. Non-finite scores (a diverged method) rank lowest."""
    s_in, s_out = _finite(scores_in), _finite(scores_out)
    if not len(s_in) or not len(s_out):
        return float("nan")
    both = np.concatenate([s_in, s_out])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    values = both[order]  # average the ranks of ties
    starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]])
    ends = np.r_[starts[1:], len(values)]
    mean_rank = (starts + 1 + ends) / 2.0
    ranks[order] = np.repeat(mean_rank, ends - starts)
    n_in, n_out = len(s_in), len(s_out)
    u = ranks[:n_in].sum() - n_in * (n_in + 1) / 2.0
    return float(100.0 * u / (n_in * n_out))


def fpr_at_tpr(scores_in: np.ndarray, scores_out: np.ndarray, tpr: float = 0.95) -> float:
    """Percent of outliers scoring at or above the highest threshold at which at least ``tpr``
    of the test samples do; NaN when either side is empty."""
    s_in, s_out = _finite(scores_in), _finite(scores_out)
    if not len(s_in) or not len(s_out):
        return float("nan")
    ordered = np.sort(s_in)[::-1]
    threshold = ordered[int(np.ceil(tpr * len(ordered))) - 1]
    return float(100.0 * np.mean(s_out >= threshold))


def h_score(accuracy: float, auroc_percent: float) -> float:
    """Harmonic mean (percent) of an accuracy and an AUROC, both in percent."""
    if not (np.isfinite(accuracy) and np.isfinite(auroc_percent)):
        return float("nan")
    total = accuracy + auroc_percent
    return float(2.0 * accuracy * auroc_percent / total) if total > 0 else 0.0


def _finite(scores: np.ndarray) -> np.ndarray:
    """Scores as float64 with NaN/Inf replaced by the lowest value (never accepted first)."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    return np.where(np.isfinite(scores), scores, -np.inf) if len(scores) else scores
