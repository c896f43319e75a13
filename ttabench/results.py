"""The files a run writes, and their columns (documented in results/README.md).

``online.csv`` is appended and flushed batch by batch, so a run killed at any moment keeps every
row it logged. ``summary.csv`` is written atomically (temporary file + rename) with a ``status``
column: ``complete``, ``incomplete`` (running, interrupted or killed) or ``failed`` (an
exception, kept in ``message``), so a table is never silently truncated. :func:`collect` reads
the summaries of many runs back as one table.
"""

from __future__ import annotations

import csv
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from ttabench.atomic import remove_stale_temps, temp_name
from ttabench.outlier_metrics import auroc, fpr_at_tpr, h_score

ONLINE_COLUMNS = (
    "step",
    "domain",
    "severity",
    "n",
    "n_outliers",
    "correct",
    "batch_acc",
    "cum_acc",
    "n_classes",
    "majority_frac",
    "label_entropy",
    "n_domains",
    "nonfinite",
    "forwards",
    "backwards",
    "nonfinite_loss",
    "recoveries",
    "adapted",
    "selected_step",
    "relative_cost",
    "entropy",
    "snd",
    "consistency",
    "seconds",
)
STAT_COLUMNS = ("n_classes", "majority_frac", "label_entropy")
TIMING_COLUMNS = ("seconds",)
#: Per-row cost of a summary row (from the batches that hold its samples), and of the whole run.
COST_COLUMNS = (
    "forwards_per_sample",
    "backwards_per_sample",
    "seconds_per_sample",
    "nonfinite_loss",
    "first_nonfinite_loss_step",
    "recoveries",
)
RUN_COST_COLUMNS = ("peak_rss_mb", "cuda_max_mb")
#: What the evaluation protocol did (share of samples answered without the method; mean cost of
#: the batches it adapted on, in forwards of the model) and the label-free criteria (means over
#: batches: :mod:`ttabench.criteria`).
PROTOCOL_COLUMNS = ("skipped_fraction", "relative_cost")
CRITERIA_COLUMNS = ("entropy", "snd", "consistency")
#: Outlier detection (:mod:`ttabench.outlier_metrics`), in percent; NaN without outliers.
OUTLIER_COLUMNS = ("n_outliers", "auroc", "fpr95", "h_score")
#: Columns that differ between two identical runs (wall-clock time, memory).
VOLATILE_COLUMNS = ("seconds", "seconds_per_sample", *RUN_COST_COLUMNS)
ALL = "all"  # the summary row over every sample of the stream


#: Knobs a run's ``<group>_params`` may lack (it predates them, or leaves them out at their
#: default: a stream without outliers lists no ``outliers.*``), with the value it ran at.
KNOB_DEFAULTS = {
    "stream.outliers.ratio": "0.0",
    "stream.outliers.source": "embedded_ood",
    "stream.outliers.mix": "interleave",
}
#: ``<group>_params`` columns, expanded by :func:`collect` into ``<group>.<key>`` columns.
PARAM_GROUPS = ("stream", "norm", "model", "dataset", "method", "protocol")


class OnlineLog:
    """Append-only CSV, one row per batch, flushed after every row.

    Args:
        path: The CSV file (created, header written).
        on_new_domain: Called before the first row of every new ``domain`` value after the
            first: the run refreshes its partial ``summary.csv`` there, when every earlier batch
            is in its record.
    """

    def __init__(self, path: Path, on_new_domain: Callable[[], None] | None = None) -> None:
        self._file: IO[str] = open(path, "w", newline="")  # noqa: SIM115 (closed in close())
        self._writer = csv.writer(self._file)
        self._writer.writerow(ONLINE_COLUMNS)
        self._on_new_domain = on_new_domain
        self._domain: Any = None

    def write(self, row: dict[str, Any]) -> None:
        if self._on_new_domain and self._domain is not None and row["domain"] != self._domain:
            self._on_new_domain()
        self._domain = row["domain"]
        self._writer.writerow([row[column] for column in ONLINE_COLUMNS])  # KeyError if missing
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def write_csv_atomic(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` to ``path`` so that readers see the old file or the new one, never half."""
    remove_stale_temps(path)
    tmp = temp_name(path)
    frame.to_csv(tmp, index=False, float_format="%.6g")
    os.replace(tmp, path)


#: The columns of a summary row that describe that row's samples; the rest say what ran.
ROW_COLUMNS = (
    "domain",
    "severity",
    "n",
    "correct",
    "error",
    *OUTLIER_COLUMNS,
    *STAT_COLUMNS,
    "nonfinite",
)


def domain_visits(online: pd.DataFrame) -> np.ndarray | None:
    """Visit number of every batch of an ``online.csv``: consecutive batches of one (corruption,
    severity) are one visit. None for a pooled stream (a batch spanning domains, or far more
    changes of domain than domains): there its changes of domain are sampling, not shifts."""
    names = (online["domain"].astype(str) + ":" + online["severity"].astype(str)).to_numpy()
    visits = np.concatenate([[0], np.cumsum(names[1:] != names[:-1])])[: len(names)]
    pooled = len(names) > 0 and visits[-1] >= 3 * len(set(names))
    if pooled or "mixed" in set(online["domain"]):
        return None
    return visits


def summarize(
    domain_names: Sequence[str],
    severities: Sequence[int],
    sample_domain: np.ndarray,
    sample_correct: np.ndarray,
    batch_rows: list[dict[str, Any]],
    batch_domains: list[np.ndarray],
    meta: dict[str, Any],
    sample_outlier: np.ndarray | None = None,
    sample_score: np.ndarray | None = None,
) -> pd.DataFrame:
    """One row per (corruption, severity) in order of first appearance, then the ``all`` row.

    ``error`` is 100 * (1 - accuracy) over the domain's samples, as TTA papers report it;
    stream statistics are means over the batches that contain the domain. Vectorised over
    samples and batches (a batch x domain membership table), so the partial summaries a run
    refreshes at domain boundaries stay cheap on long streams.

    With outliers (``sample_outlier``; ``sample_domain`` then holds the test domain each
    outlier was mixed into), ``n`` and ``error`` are the test samples' only, and ``auroc``,
    ``fpr95`` and ``h_score`` say how ``sample_score`` separates them from the outliers; the
    ``all`` row holds their means over domains, as STAMP averages them.
    """
    sample_domain = np.asarray(sample_domain, dtype=np.int64)
    ids, first = np.unique(sample_domain, return_index=True)
    seen = ids[np.argsort(first)].tolist()
    width = max([len(domain_names), *(d + 1 for d in seen)])
    outlier = (
        np.zeros(len(sample_domain), dtype=bool)
        if sample_outlier is None
        else np.asarray(sample_outlier, dtype=bool)
    )
    n_of = np.bincount(sample_domain[~outlier], minlength=width)
    n_out_of = np.bincount(sample_domain[outlier], minlength=width)
    correct_of = np.bincount(
        sample_domain[~outlier], weights=np.asarray(sample_correct)[~outlier], minlength=width
    )
    member = np.zeros((len(batch_rows), width), dtype=bool)
    if batch_rows:
        lengths = [len(doms) for doms in batch_domains]
        member[np.repeat(np.arange(len(batch_rows)), lengths), np.concatenate(batch_domains)] = 1
    per_batch = {
        key: np.array([_number(b.get(key, 0)) for b in batch_rows], dtype=np.float64)
        for key in (*STAT_COLUMNS, "nonfinite", "n", "forwards", "backwards", "seconds",
                    "nonfinite_loss", "recoveries", "step", "relative_cost", *CRITERIA_COLUMNS)
    }  # fmt: skip
    per_batch["adapted"] = np.array([b.get("adapted", 1) for b in batch_rows], dtype=np.float64)
    per_batch["samples"] = per_batch["n"] + np.array(
        [_number(b.get("n_outliers", 0)) for b in batch_rows], dtype=np.float64
    )
    rows = []
    groups = [([d], domain_names[d], severities[d]) for d in seen]
    groups.append((seen, ALL, _common(severities[d] for d in seen)))
    for group, name, severity in groups:
        n, correct = int(n_of[group].sum()), int(round(correct_of[group].sum()))
        batches = member[:, group].any(axis=1)
        row = {"domain": name, "severity": severity, "n": n, "correct": correct}
        row["error"] = 100.0 * (1 - correct / n) if n else float("nan")
        row["n_outliers"] = int(n_out_of[group].sum())
        if name == ALL:
            row |= _mean_detection(rows)
        else:
            row |= _detection(
                sample_score, sample_domain == group[0], outlier, 100.0 - row["error"]
            )
        for col in STAT_COLUMNS:  # NaN: a batch of outliers only has no labels to describe
            row[col] = _nanmean(per_batch[col][batches])
        row["nonfinite"] = int(per_batch["nonfinite"][batches].sum())
        mine = {k: v[batches] for k, v in per_batch.items()}
        rows.append(row | _costs(mine) | _protocol(mine) | meta)
    if not rows[:-1]:  # nothing ran: keep a single 'all' row that carries the status
        rows = rows[-1:]
    return pd.DataFrame(rows)


def _detection(
    score: np.ndarray | None, mine: np.ndarray, outlier: np.ndarray, accuracy: float
) -> dict[str, float]:
    """AUROC, FPR95 and H-score of one domain's samples (NaN without outliers or scores)."""
    if score is None or not (mine & outlier).any():
        return dict.fromkeys(("auroc", "fpr95", "h_score"), float("nan"))
    score = np.asarray(score)
    s_in, s_out = score[mine & ~outlier], score[mine & outlier]
    area = auroc(s_in, s_out)
    return {"auroc": area, "fpr95": fpr_at_tpr(s_in, s_out), "h_score": h_score(accuracy, area)}


def _mean_detection(rows: list[dict[str, Any]]) -> dict[str, float]:
    """The ``all`` row's detection metrics: means over the domains that had outliers."""
    return {
        key: _nanmean(np.array([r[key] for r in rows], dtype=np.float64))
        for key in ("auroc", "fpr95", "h_score")
    }


def _costs(batches: dict[str, np.ndarray]) -> dict[str, Any]:
    """Forwards, backwards and method seconds per sample over ``batches`` (per-batch columns);
    the count of non-finite losses, the first step with one ("" if none), the recoveries."""
    n = batches["samples"].sum()
    bad = batches["step"][batches["nonfinite_loss"] > 0]
    per_sample = {
        f"{key}_per_sample": float(batches[key].sum() / n) if n else float("nan")
        for key in ("forwards", "backwards", "seconds")
    }
    return per_sample | {
        "nonfinite_loss": len(bad),
        "first_nonfinite_loss_step": int(bad[0]) if len(bad) else "",
        "recoveries": int(batches["recoveries"].sum()),
    }


def _protocol(batches: dict[str, np.ndarray]) -> dict[str, float]:
    """Skipped fraction (by samples), mean relative cost of the adapted batches, and the mean
    label-free criteria over ``batches`` (NaN where nothing was measured)."""
    n = batches["samples"].sum()
    adapted = batches["adapted"] > 0
    skipped = float(1 - (batches["samples"] * adapted).sum() / n) if n else np.nan
    row = {"skipped_fraction": skipped}
    row["relative_cost"] = _nanmean(batches["relative_cost"][adapted])
    return row | {key: _nanmean(batches[key]) for key in CRITERIA_COLUMNS}


def _nanmean(values: np.ndarray) -> float:
    values = values[np.isfinite(values)]
    return float(values.mean()) if len(values) else float("nan")


def _number(value: Any) -> float:
    """A per-batch value as a float; empty (not measured) is NaN."""
    return float("nan") if value == "" or value is None else float(value)


def _common(values) -> int | str:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else ""


def parse_params(text: str) -> dict[str, str]:
    """``key=value;...`` (the ``<group>_params`` columns) back into a dict of strings."""
    pairs = (item.split("=", 1) for item in str(text).split(";") if "=" in item)
    return {k: v for k, v in pairs}


def _read_summary(path: Path) -> pd.DataFrame | None:
    """One run's summary, or None with a warning naming the file when it cannot be read (empty,
    truncated by a full disk, edited by hand): one broken run must not hide the others."""
    try:
        frame = pd.read_csv(path, keep_default_na=False, dtype=str)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError) as exc:
        warnings.warn(f"skipping {path}: unreadable ({str(exc).splitlines()[0]})", stacklevel=3)
        return None
    missing = {"domain", "status"} - set(frame.columns)
    if missing:
        message = f"skipping {path}: not a ttabench summary (no {sorted(missing)})"
        warnings.warn(message, stacklevel=3)
        return None
    return frame


def fill_knob_defaults(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs that predate a knob (or leave it out at its default) ran at its default: say so,
    so they are one configuration with the runs that list it (:data:`KNOB_DEFAULTS`)."""
    for key, default in KNOB_DEFAULTS.items():
        if key in runs:
            runs[key] = runs[key].fillna("").replace("", default)
    return runs


def collect(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Every run's summary rows under ``paths``, as one table with a ``run_dir`` column.

    A directory is searched recursively for ``summary.csv``; a file is read as a table of
    summary rows written earlier by ``collect`` (e.g. ``results/summaries.csv.gz``). Run
    directories reached twice (overlapping arguments) are read once. The ``<group>_params``
    columns (stream, norm, model, dataset, method) are expanded into ``<group>.<key>`` columns
    (strings, as written), so tables can group by e.g. ``stream.delta``.
    """
    paths = [Path(p) for p in paths]
    frames, seen = [], set()
    for root in paths:
        if root.is_file():  # a table written by collect: unreadable is an input error
            try:
                frames.append(pd.read_csv(root, keep_default_na=False, dtype=str))
            except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as exc:
                reason = str(exc).splitlines()[0]
                raise ValueError(f"{root} is not a table of summary rows ({reason})") from None
            continue
        for path in sorted(root.rglob("summary.csv")):
            key = path.parent.resolve()
            if key not in seen:
                seen.add(key)
                frame = _read_summary(path)
                if frame is not None:
                    frames.append(frame.assign(run_dir=str(path.parent)))
    if not frames:
        raise FileNotFoundError(f"no summary.csv under {', '.join(map(str, paths))}")
    runs = pd.concat(frames, ignore_index=True)
    raw = [c for c in runs.columns if "." not in c]  # a combined file carries expanded columns
    runs = runs[raw].drop_duplicates(ignore_index=True)
    for group in PARAM_GROUPS:
        column = f"{group}_params"
        if column in runs:
            params = pd.DataFrame([parse_params(t) for t in runs[column]], index=runs.index)
            runs = runs.join(params.add_prefix(f"{group}.").fillna(""))
    runs = fill_knob_defaults(runs)
    numeric = ("n", "correct", "error", "seed", "stream_seed", "batch_size", "nonfinite")
    for column, default in (("protocol", "online"), ("uses_labels", "False")):  # older runs
        runs[column] = (
            runs[column].fillna(default).replace("", default) if column in runs else default
        )
    for column in (
        *numeric,
        *COST_COLUMNS,
        *RUN_COST_COLUMNS,
        *PROTOCOL_COLUMNS,
        *CRITERIA_COLUMNS,
        *OUTLIER_COLUMNS,
    ):
        if column in runs:
            runs[column] = pd.to_numeric(runs[column], errors="coerce")
    return runs
