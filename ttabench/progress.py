"""Error by position within each domain: how fast a method adapts after a domain shift.

A method that converges slowly (UnMix-TNS's components, EMA statistics with a small momentum)
and one that is right from the first batch can have the same error over a whole domain and
differ completely in how they get there. ``summary.csv`` cannot tell them apart; the batches of
``online.csv`` can. Each *visit* to a domain (consecutive batches with the same corruption and
severity) is cut into ``parts`` equal runs of batches, and part k of every visit is pooled: per
domain, and over the whole stream (``all``).

The result has the shape of collected summary rows (the run's configuration columns,
``domain``, ``severity``, ``n``, ``correct``, ``error``) plus ``position`` (1..parts), so
:func:`ttabench.tables.build` groups, averages over seeds and checks streams exactly as it does
for summaries (``ttabench compare DIR --parts 4``). Under ``mixed`` streams batches span domains
(``domain=mixed``), so the whole stream is one visit.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ttabench.results import ALL, STAT_COLUMNS

POSITION = "position"
_DIRECTORIES = "give run or sweep directories, not a combined CSV such as results/summaries.csv.gz"
_PER_ROW = ("domain", "severity", "n", "correct", "error", "nonfinite", *STAT_COLUMNS)


def by_position(runs: pd.DataFrame, parts: int) -> pd.DataFrame:
    """Summary-like rows by ``position`` for every complete run of ``runs`` (from ``collect``).

    Raises:
        ValueError: ``parts`` < 1, or no complete run.
        FileNotFoundError: a complete run has no ``online.csv`` (e.g. it was read from a
            combined CSV, whose ``run_dir`` names no directory here).
    """
    if parts < 1:
        raise ValueError(f"--parts must be >= 1, got {parts}")
    complete = runs[runs["status"] == "complete"]
    if "run_dir" not in complete:
        raise ValueError(f"--parts reads every run's online.csv: {_DIRECTORIES}")
    frames = [
        _positions(Path(run_dir), rows[rows["domain"] == ALL].iloc[0], parts)
        for run_dir, rows in complete.groupby("run_dir", sort=False)
    ]
    if not frames:
        raise ValueError("no complete run matches")
    return pd.concat(frames, ignore_index=True)


def _positions(run_dir: Path, config: pd.Series, parts: int) -> pd.DataFrame:
    """One run's rows: ``n``/``correct`` summed over part k of every visit, per domain and all."""
    path = run_dir / "online.csv"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: --parts reads every run's online.csv: {_DIRECTORIES}"
        )
    online = pd.read_csv(path, keep_default_na=False, dtype={"domain": str, "severity": str})
    key = online[["domain", "severity"]]
    visit = (key != key.shift()).any(axis=1).cumsum()
    rank, size = online.groupby(visit).cumcount(), online.groupby(visit)["n"].transform("size")
    online[POSITION] = rank * parts // size + 1
    counts = ["n", "correct"]
    per_domain = online.groupby(["domain", "severity", POSITION], sort=False)[counts].sum()
    overall = online.groupby(POSITION)[counts].sum().assign(domain=ALL)
    rows = pd.concat(
        [per_domain.reset_index(), overall.reset_index().assign(severity=config["severity"])],
        ignore_index=True,
    )
    rows["error"] = 100.0 * (1.0 - rows["correct"] / rows["n"])
    shared = config.drop([c for c in _PER_ROW if c in config.index])
    return rows.assign(**shared.to_dict())
