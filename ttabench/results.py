"""The files a run writes, and their columns (documented in results/README.md).

``online.csv`` is appended and flushed batch by batch, so a run killed at any moment keeps every
row it logged. ``summary.csv`` is written atomically (temporary file + rename) with a ``status``
column: ``complete``, ``incomplete`` (interrupted) or ``failed`` (an exception, kept in
``message``), so a table is never silently truncated.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

ONLINE_COLUMNS = (
    "step",
    "domain",
    "severity",
    "n",
    "correct",
    "batch_acc",
    "cum_acc",
    "n_classes",
    "majority_frac",
    "label_entropy",
    "nonfinite",
    "seconds",
)
STAT_COLUMNS = ("n_classes", "majority_frac", "label_entropy")
TIMING_COLUMNS = ("seconds",)
ALL = "all"  # the summary row over every sample of the stream


class OnlineLog:
    """Append-only CSV, one row per batch, flushed after every row."""

    def __init__(self, path: Path) -> None:
        self._file: IO[str] = open(path, "w", newline="")  # noqa: SIM115 (closed in close())
        self._writer = csv.DictWriter(self._file, fieldnames=ONLINE_COLUMNS)
        self._writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self._writer.writerow(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` so that readers see the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    frame.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, path)


def summarize(
    domain_names: Sequence[str],
    severities: Sequence[int],
    sample_domain: np.ndarray,
    sample_correct: np.ndarray,
    batch_rows: list[dict[str, Any]],
    batch_domains: list[np.ndarray],
    meta: dict[str, Any],
) -> pd.DataFrame:
    """One row per (corruption, severity) in order of first appearance, then the ``all`` row.

    ``error`` is 100 * (1 - accuracy) over the domain's samples, as TTA papers report it;
    stream statistics are means over the batches that contain the domain.
    """
    rows = []
    seen = list(dict.fromkeys(sample_domain.tolist()))
    groups = [([d], domain_names[d], severities[d]) for d in seen]
    groups.append((seen, ALL, _common(severities[d] for d in seen)))
    for ids, name, severity in groups:
        mask = np.isin(sample_domain, ids)
        batches = [
            r for r, doms in zip(batch_rows, batch_domains, strict=True) if np.isin(doms, ids).any()
        ]
        n, correct = int(mask.sum()), int(sample_correct[mask].sum())
        row = {"domain": name, "severity": severity, "n": n, "correct": correct}
        row["error"] = 100.0 * (1 - correct / n) if n else float("nan")
        for col in STAT_COLUMNS:
            row[col] = float(np.mean([b[col] for b in batches])) if batches else float("nan")
        row["nonfinite"] = int(sum(b["nonfinite"] for b in batches))
        rows.append(row | meta)
    if not rows[:-1]:  # nothing ran: keep a single 'all' row that carries the status
        rows = rows[-1:]
    return pd.DataFrame(rows)


def _common(values) -> int | str:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else ""
