"""The online loop: for each batch of the stream, predict (and let the method adapt), then log.

The runner knows nothing of specific methods, datasets or streams: it resets the method where
the stream says so, takes the batch's images from the loader (floats in [0, 1] on the device,
read ahead: :mod:`ttabench.loader`), lets the evaluation protocol (:mod:`ttabench.protocols`;
``online``: ``method(x)``) answer it, scores the argmax and appends one row to ``online.csv``.
Non-finite logits (a diverging method) are counted and scored as wrong, never raised; so is a
non-finite loss, with the step it happened at. Each row also carries the method's cost: samples
forwarded and back-propagated, recoveries, and the seconds of its call. Outliers in the stream
(label -1) go through the method like every sample but never count in its accuracy (``n`` and
``correct`` are the test set's samples); every sample's outlier score is recorded.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ttabench.criteria import label_free_criteria
from ttabench.loader import BatchLoader
from ttabench.methods.augment import CoTTAAugment, MethodRandom
from ttabench.methods.base import TTAMethod
from ttabench.protocols import Answer, Online, Protocol
from ttabench.results import STAT_COLUMNS, OnlineLog
from ttabench.streams import batch_label_stats

log = logging.getLogger(__name__)


@dataclass
class StreamRecord:
    """Everything the run saw, filled batch by batch (complete or not)."""

    sample_domain: list[np.ndarray] = field(default_factory=list)
    sample_index: list[np.ndarray] = field(default_factory=list)
    sample_label: list[np.ndarray] = field(default_factory=list)
    sample_pred: list[np.ndarray] = field(default_factory=list)
    sample_outlier: list[np.ndarray] = field(default_factory=list)
    sample_score: list[np.ndarray] = field(default_factory=list)
    batch_rows: list[dict] = field(default_factory=list)
    batch_domains: list[np.ndarray] = field(default_factory=list)

    def cat(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def correct(self) -> np.ndarray:
        """Per sample: a test sample predicted right (an outlier never is)."""
        outlier = self.cat("sample_outlier").astype(bool)
        return (self.cat("sample_pred") == self.cat("sample_label")) & ~outlier


def predictions(logits: torch.Tensor) -> np.ndarray:
    """Class index of every row of ``logits`` (int64), -1 where a row is not finite.

    On the CPU in NumPy (one small array: cheaper than four torch calls); on a GPU the argmax
    runs there and only the indices are copied back, the one host sync a batch needs.
    """
    logits = logits.detach().float()
    if logits.device.type == "cpu":
        values = logits.numpy()
        pred = values.argmax(axis=1)
        pred[~np.isfinite(values).all(axis=1)] = -1
        return pred
    finite = torch.isfinite(logits).all(dim=1)
    return torch.where(finite, logits.argmax(dim=1), -1).cpu().numpy()


def _label_stat(key: str, value: float) -> int | float | str:
    """A batch's label statistic for online.csv; empty for a batch of outliers only."""
    if np.isnan(value):
        return ""
    return int(value) if key == "n_classes" else float(value)


def _log_probabilities(method: TTAMethod, answer: Answer) -> torch.Tensor:
    logits = answer.logits
    return logits.float().log_softmax(dim=1) if answer.plain else method.log_probabilities(logits)


def run_stream(
    method: TTAMethod,
    loader: BatchLoader,
    online: OnlineLog,
    record: StreamRecord,
    progress: bool = True,
    amp: bool = False,
    protocol: Protocol | None = None,
    consistency: bool = False,
    outlier_score: str = "entropy",
) -> None:
    """Stream ``loader``'s plan through ``method``, appending to ``online`` and ``record``.

    The per-batch work outside the model is kept small: label statistics are computed for the
    whole plan at once, images are read ahead by the loader, and the one host synchronisation
    per batch is the copy of the predictions that the log needs (the label-free criteria's two
    scalars are read after it: small kernels, no stall of the model's work). ``amp``: the
    method runs under ``torch.autocast`` in bfloat16 (float32's exponent range, so gradient
    methods need no loss scaling); logits are scored in float32. ``protocol``: how each batch
    reaches the method (default :class:`~ttabench.protocols.Online`); only one with
    ``uses_labels`` gets the labels.
    ``consistency``: also forward the batch and a soft CoTTA view of it through the state the
    batch left (not timed, not counted as the method's) for the consistency criterion.
    ``outlier_score``: the score of methods without their own (:meth:`TTAMethod.outlier_score`).
    """
    plan = loader.plan
    stream_labels = plan.labels_of(loader.dataset.labels)
    outlier = plan.outlier_mask()
    groups, group_of = plan.inlier_groups()
    stats = batch_label_stats(stream_labels, plan.batch_starts, ~outlier)
    total = correct_so_far = 0
    warned = False
    autocast = torch.autocast(loader.device.type, dtype=torch.bfloat16, enabled=amp)
    protocol = protocol or Online()
    view = (
        CoTTAAugment(MethodRandom(method.context.seed + 7919), soft=True) if consistency else None
    )
    bar = tqdm(loader, total=plan.n_batches, disable=not progress, unit="batch")
    for batch, x in bar:
        step, dom = batch.number, batch.domain_ids
        if batch.reset:
            method.reset()
            protocol.reset()
        y = stream_labels[plan.batch_starts[step] : plan.batch_starts[step + 1]]
        is_out = outlier[plan.batch_starts[step] : plan.batch_starts[step + 1]]
        labels = torch.as_tensor(y, device=x.device) if protocol.uses_labels else None
        start = time.perf_counter()
        with autocast:
            answer = protocol(method, x, labels)
        logits = answer.logits
        if logits.shape[-1] != loader.dataset.num_classes:
            raise ValueError(
                f"the model outputs {logits.shape[-1]} classes but dataset "
                f"{loader.dataset.name} has {loader.dataset.num_classes}: choose the model "
                "trained for it (dataset=embedded_8_2: model=embedded_8)"
            )
        pred = predictions(logits)  # syncs the device
        seconds = time.perf_counter() - start - answer.overhead_seconds
        nonfinite = int((pred < 0).sum())
        costs = method.pop_costs()  # after the sync above: reads settled device scalars
        pair = None
        if view is not None:
            with autocast:
                pair = tuple(method.log_probabilities(method.predict(v)) for v in (x, view(x)))
            method.pop_costs()  # the criterion's forwards are not the method's
        if (nonfinite or costs["nonfinite_loss"]) and not warned:
            what = "logits" if nonfinite else "loss"
            log.warning("non-finite %s at step %d: the method diverges; run goes on", what, step)
            warned = True
        log_probs = _log_probabilities(method, answer)
        score = method.outlier_score(log_probs, outlier_score).detach().float().cpu().numpy()
        n_out = int(is_out.sum())
        n_in = len(y) - n_out
        correct = int(((pred == y) & ~is_out).sum())
        total, correct_so_far = total + n_in, correct_so_far + correct
        grouped = group_of[dom]
        domains = grouped[:1] if (grouped == grouped[0]).all() else np.unique(grouped)
        single = len(domains) == 1
        row = {
            "step": step,
            "domain": groups[int(domains[0])].corruption if single else "mixed",
            "severity": groups[int(domains[0])].severity if single else "",
            "n": n_in,
            "n_outliers": n_out,
            "correct": correct,
            "batch_acc": correct / n_in if n_in else "",
            "cum_acc": correct_so_far / total if total else "",
            **{key: _label_stat(key, stats[key][step]) for key in STAT_COLUMNS},
            "n_domains": len(domains),
            "nonfinite": nonfinite,
            **costs,
            "adapted": int(answer.adapted),
            "selected_step": answer.selected_step,
            "relative_cost": "" if answer.relative_cost is None else round(answer.relative_cost, 6),
            **label_free_criteria(log_probs, pair),
            "seconds": round(seconds, 6),
        }
        online.write(row)
        record.sample_domain.append(dom)
        record.sample_index.append(batch.indices)
        record.sample_label.append(y)
        record.sample_pred.append(pred)
        record.sample_outlier.append(is_out)
        record.sample_score.append(score)
        record.batch_rows.append(row)
        record.batch_domains.append(domains)
        if total:
            bar.set_postfix(acc=f"{correct_so_far / total:.3f}", refresh=False)
