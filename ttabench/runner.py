"""The online loop: for each batch of the stream, predict (and let the method adapt), then log.

The runner knows nothing of specific methods, datasets or streams: it resets the method where
the stream says so, fetches the batch's uint8 images from the dataset, converts them to floats in
[0, 1] on the device, scores ``argmax(method(x))`` and appends one row to ``online.csv``.
Non-finite logits (a diverging method) are counted and scored as wrong, never raised; so is a
non-finite loss, with the step it happened at. Each row also carries the method's cost: samples
forwarded and back-propagated, recoveries, and the seconds of its call.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm import tqdm

from ttabench.data.base import CorruptionDataset
from ttabench.methods.base import TTAMethod
from ttabench.results import OnlineLog
from ttabench.streams import StreamPlan, label_stats

log = logging.getLogger(__name__)


@dataclass
class StreamRecord:
    """Everything the run saw, filled batch by batch (complete or not)."""

    sample_domain: list[np.ndarray] = field(default_factory=list)
    sample_index: list[np.ndarray] = field(default_factory=list)
    sample_label: list[np.ndarray] = field(default_factory=list)
    sample_pred: list[np.ndarray] = field(default_factory=list)
    batch_rows: list[dict] = field(default_factory=list)
    batch_domains: list[np.ndarray] = field(default_factory=list)

    def cat(self, name: str) -> np.ndarray:
        parts = getattr(self, name)
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def fetch_images(dataset: CorruptionDataset, plan: StreamPlan, domain_ids, indices) -> torch.Tensor:
    """uint8 images of one batch in stream order (a mixed batch spans several domains)."""
    first = int(domain_ids[0])
    if (domain_ids == first).all():
        return dataset.images(plan.domains[first], indices)
    out = None
    for d in np.unique(domain_ids):
        rows = np.flatnonzero(domain_ids == d)
        part = dataset.images(plan.domains[int(d)], indices[rows])
        if out is None:
            out = part.new_empty((len(indices), *part.shape[1:]))
        out[torch.from_numpy(rows)] = part
    return out


def run_stream(
    method: TTAMethod,
    dataset: CorruptionDataset,
    plan: StreamPlan,
    device: torch.device,
    online: OnlineLog,
    record: StreamRecord,
    progress: bool = True,
) -> None:
    """Stream ``plan`` through ``method``, appending to ``online`` and ``record`` as it goes."""
    stream_labels = plan.labels_of(dataset.labels)
    total = correct_so_far = 0
    warned = False
    bar = tqdm(plan.batches(), total=plan.n_batches, disable=not progress, unit="batch")
    for step, batch in enumerate(bar):
        dom, idx = batch.domain_ids, batch.indices
        if batch.reset:
            method.reset()
        y = stream_labels[plan.batch_starts[step] : plan.batch_starts[step + 1]]
        x = fetch_images(dataset, plan, dom, idx).to(device, non_blocking=True).float().div_(255)
        start = time.perf_counter()
        logits = method(x)
        finite = torch.isfinite(logits).all(dim=1)
        pred = torch.where(finite, logits.argmax(dim=1), -1).cpu().numpy()  # syncs the device
        seconds = time.perf_counter() - start
        nonfinite = int((pred < 0).sum())
        costs = method.pop_costs()  # after the sync above: reads settled device scalars
        if (nonfinite or costs["nonfinite_loss"]) and not warned:
            what = "logits" if nonfinite else "loss"
            log.warning("non-finite %s at step %d: the method diverges; run goes on", what, step)
            warned = True
        correct = int((pred == y).sum())
        total, correct_so_far = total + len(y), correct_so_far + correct
        domains = np.unique(dom)
        single = len(domains) == 1
        row = {
            "step": step,
            "domain": plan.domains[int(domains[0])].corruption if single else "mixed",
            "severity": plan.domains[int(domains[0])].severity if single else "",
            "n": len(y),
            "correct": correct,
            "batch_acc": correct / len(y),
            "cum_acc": correct_so_far / total,
            **label_stats(y),
            "n_domains": len(domains),
            "nonfinite": nonfinite,
            **costs,
            "seconds": round(seconds, 6),
        }
        online.write(row)
        record.sample_domain.append(np.asarray(dom))
        record.sample_index.append(np.asarray(idx))
        record.sample_label.append(y)
        record.sample_pred.append(pred)
        record.batch_rows.append(row)
        record.batch_domains.append(domains)
        bar.set_postfix(acc=f"{correct_so_far / total:.3f}", refresh=False)
