"""Test streams for non-i.i.d. TTA: domain schedules x label orderings x batch size.

See specs/streams.md. ``Stream`` (Hydra ``configs/stream/*.yaml``) builds a ``StreamPlan``
(index-only, saved with its SHA-256 next to results); ``label_stats`` and the helpers in
:mod:`ttabench.streams.stats` describe how correlated a stream really is.
"""

from .plan import Batch, StreamPlan
from .stats import batch_label_stats, label_stats, mean_run_length, plan_stats, summarize
from .stream import Stream

__all__ = [
    "Batch",
    "Stream",
    "StreamPlan",
    "batch_label_stats",
    "label_stats",
    "mean_run_length",
    "plan_stats",
    "summarize",
]
