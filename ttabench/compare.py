"""``ttabench compare DIR...``: every run's summary.csv under DIR, as one error table.

Rows and columns are summary columns chosen by flags (default: rows = method, columns = domain
in the order the runs saw them); cells are error % as mean +- std over seeds. Only complete runs
are tabulated; incomplete and failed runs are listed underneath so they are never averaged in.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd


def collect(dirs: list[Path]) -> pd.DataFrame:
    """All summary.csv files found (recursively) under ``dirs``, with a ``run_dir`` column."""
    frames = []
    for root in dirs:
        for path in sorted(Path(root).rglob("summary.csv")):
            frames.append(pd.read_csv(path, keep_default_na=False).assign(run_dir=str(path.parent)))
    if not frames:
        raise FileNotFoundError(f"no summary.csv under {', '.join(map(str, dirs))}")
    return pd.concat(frames, ignore_index=True)


def error_table(runs: pd.DataFrame, rows: list[str], column: str) -> pd.DataFrame:
    """Pivot complete runs: one cell per (rows, column), error mean +- std over seeds."""
    done = runs[runs["status"] == "complete"]
    order = list(dict.fromkeys(done[column]))  # first-seen order: canonical for corruptions
    stats = done.groupby([*rows, column], sort=False)["error"].agg(["mean", "std", "count"])
    cells = stats.apply(
        lambda s: f"{s['mean']:.1f}" + (f" ± {s['std']:.1f}" if s["count"] > 1 else ""), axis=1
    )
    table = cells.unstack(column)
    return table[[c for c in order if c in table.columns]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="ttabench compare", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--rows", default="method", help="comma-separated row keys")
    parser.add_argument("--columns", default="domain", help="column key")
    parser.add_argument("--format", choices=["table", "markdown", "csv"], default="table")
    args = parser.parse_args(argv)
    try:
        runs = collect(args.dirs)
    except FileNotFoundError as exc:
        print(f"ttabench compare: error: {exc}", file=sys.stderr)
        return 2
    rows = args.rows.split(",")
    unknown = [k for k in [*rows, args.columns] if k not in runs.columns]
    if unknown:
        print(
            f"ttabench compare: unknown key(s) {unknown}; valid: {list(runs.columns)}",
            file=sys.stderr,
        )
        return 2
    table = error_table(runs, rows, args.columns)
    if args.format == "markdown":
        print(table.to_markdown())
    elif args.format == "csv":
        print(table.to_csv(), end="")
    else:
        print(table.to_string())
    unfinished = runs[(runs["status"] != "complete") & (runs["domain"] == "all")]
    for _, run in unfinished.iterrows():
        print(f"not tabulated ({run['status']}): {run['run_dir']} {run.get('message', '')}")
    return 0
