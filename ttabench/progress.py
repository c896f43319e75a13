"""Error by part of each domain: how fast a method adapts after a domain shift.

A method that converges slowly (UnMix-TNS's components, EMA statistics with a small momentum)
and one that is right from the first batch can have the same error over a whole domain and
differ completely in how they get there. ``summary.csv`` cannot tell them apart; the batches of
``online.csv`` can. Each *visit* to a domain (consecutive batches of one corruption and
severity, :func:`ttabench.results.domain_visits`) is cut into ``parts`` equal runs of batches,
and part k of every visit is pooled: per domain, and over the whole stream (``all``). A visit
shorter than ``parts`` batches spreads its batches over the parts (2 batches of 4 parts: 1, 3).
A pooled stream (``mixed``) is one visit: its changes of domain are sampling, not shifts.

The result has the shape of collected summary rows (the run's configuration columns,
``domain``, ``severity``, ``n``, ``correct``, ``error``) plus ``part`` (1..parts), so
:func:`ttabench.tables.build` groups, averages over seeds and checks streams exactly as it does
for summaries (``ttabench compare DIR --parts 4``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ttabench.results import (
    ALL,
    COST_COLUMNS,
    CRITERIA_COLUMNS,
    PROTOCOL_COLUMNS,
    ROW_COLUMNS,
    RUN_COST_COLUMNS,
    domain_visits,
)

PART = "part"
_DIRECTORIES = "give run or sweep directories, not a combined CSV such as results/summaries.csv.gz"


def by_part(runs: pd.DataFrame, parts: int) -> pd.DataFrame:
    """Summary-like rows by ``part`` for every complete run of ``runs`` (from ``collect``).

    Raises:
        ValueError: ``parts`` < 1, or no complete run.
        FileNotFoundError: a complete run has no ``online.csv`` (e.g. it was read from a
            combined CSV, whose ``run_dir`` names no directory here).
    """
    if parts < 1:
        raise ValueError(f"--parts must be >= 1, got {parts}")
    complete = runs[(runs["status"] == "complete") & (runs["domain"] == ALL)]
    if "run_dir" not in complete:
        raise ValueError(f"--parts reads every run's online.csv: {_DIRECTORIES}")
    if complete.empty:
        raise ValueError("no complete run matches")
    return pd.concat(
        [_parts(Path(row["run_dir"]), row, parts) for _, row in complete.iterrows()],
        ignore_index=True,
    )


def _parts(run_dir: Path, config: pd.Series, parts: int) -> pd.DataFrame:
    """One run's rows: ``n``/``correct`` summed over part k of every visit, per domain and all."""
    path = run_dir / "online.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --parts reads every run's online.csv: {_DIRECTORIES}"
        )
    online = pd.read_csv(path, keep_default_na=False, dtype={"domain": str, "severity": str})
    visits = domain_visits(online)
    visit = pd.Series(np.zeros(len(online), int) if visits is None else visits)
    rank = visit.groupby(visit).cumcount()
    length = visit.map(visit.value_counts())
    online[PART] = rank * parts // length + 1
    counts = ["n", "correct"]
    per_domain = online.groupby(["domain", "severity", PART], sort=False)[counts].sum()
    overall = online.groupby(PART)[counts].sum().assign(domain=ALL, severity=config["severity"])
    rows = pd.concat([per_domain.reset_index(), overall.reset_index()], ignore_index=True)
    rows["error"] = 100.0 * (1.0 - rows["correct"] / rows["n"])
    per_row = (*ROW_COLUMNS, *COST_COLUMNS, *PROTOCOL_COLUMNS, *CRITERIA_COLUMNS, *RUN_COST_COLUMNS)
    shared = config.drop([c for c in per_row if c in config.index])
    return rows.assign(**shared.to_dict())
