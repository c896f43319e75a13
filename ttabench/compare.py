"""``ttabench compare DIR...``: every run's summary.csv under DIR, as paper-style error tables.

Rows and columns are keys chosen by flags (default: rows = method, columns = domain); cells are
error % as mean +- std over seeds with the best per column marked (bold in Markdown and LaTeX,
``*`` in the terminal). ``--against DIR...`` puts a second result set side by side, with the
difference. Only complete runs are tabulated; incomplete and failed runs are listed underneath,
and cells whose runs saw different streams are flagged instead of averaged (the rules are in
:mod:`ttabench.tables`). ``--format csv`` writes the tidy cells (one line per cell) instead.
``--parts P`` tabulates error by part of each domain visit (:mod:`ttabench.progress`).
``--sensitivity KEY`` tabulates error against one swept knob, with the default, the best in
hindsight and label-free or held-out selections (:mod:`ttabench.sensitivity`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ttabench.progress import PART, by_part
from ttabench.results import ALL, collect
from ttabench.sensitivity import sensitivity_table
from ttabench.tables import CHOICES, METRICS, Table, build, select, side_by_side

FORMATS = ("table", "markdown", "latex", "csv")
EXAMPLES = """examples:
  ttabench compare outputs/sweeps/grid                       # rows method, columns domain
  ttabench compare outputs/sweeps/grid --columns stream --format markdown
  ttabench compare outputs/sweeps/grid --rows method,stream --columns delta --where batch_size=64
  ttabench compare outputs/new --against results/summaries.csv.gz --labels new,ref
  ttabench compare results/summaries.csv.gz --format latex --order method=source,bn
  ttabench compare outputs/sweeps/grid --parts 4 --rows method,stream  # by domain quarter
  ttabench compare outputs/sens/test --sensitivity method.optim.lr --heldout outputs/sens/heldout"""


def cell_text(mean: float, std: float, n: int, flag: str, digits: int, full: int) -> str:
    """``12.3 ± 0.4``; one seed: ``12.3``; fewer seeds than the table's most: ``(n=2)`` added."""
    if flag:
        return flag
    if np.isnan(mean):
        return ""
    if n == 0:  # a difference
        return f"{mean:+.{digits}f}"
    text = f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if n > 1 else "")
    return text + (f" (n={n})" if n < full else "")


def layout(table: Table, digits: int = 1) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The table as display strings (rows x columns, in order) and where the best cells are."""
    cells = table.cells
    full = int(cells.loc[cells["n"] > 0, "n"].max()) if (cells["n"] > 0).any() else 0
    index = [*table.rows, *(["set"] if table.sets else [])]
    text = cells.apply(
        lambda c: cell_text(c["mean"], c["std"], c["n"], c["flag"], digits, full), axis=1
    )
    rounded = cells["mean"].round(digits).where((cells["flag"] == "") & (cells["n"] > 0))
    group = [table.column, *(["set"] if table.sets else [])]
    by = rounded.groupby([cells[k] for k in group])
    lower = METRICS.get(table.value, ("", True))[1]
    best = rounded == by.transform("min" if lower else "max")
    best &= by.transform("count") > 1  # a lone cell: no mark
    frame = cells.assign(text=text, best=best).set_index([*index, table.column])
    shown = frame["text"].unstack(table.column)
    marks = frame["best"].unstack(table.column).reindex_like(shown).fillna(False).astype(bool)
    orders = [table.order[k] for k in table.rows] + ([table.sets] if table.sets else [])
    rows = sorted(shown.index, key=lambda r: _rank(r if isinstance(r, tuple) else (r,), orders))
    columns = [c for c in table.order[table.column] if c in shown.columns]
    shown, marks = shown.loc[rows, columns].fillna(""), marks.loc[rows, columns]
    if table.column not in (*CHOICES, "domain"):  # bare numbers say nothing: `delta=0.1`
        shown.columns = marks.columns = [f"{table.column}={c}" for c in columns]
    return shown, marks


def render(table: Table, fmt: str, digits: int = 1) -> str:
    """The table in ``fmt`` (see FORMATS): text to print."""
    if fmt == "csv":
        return table.cells.to_csv(index=False, float_format=f"%.{digits + 2}f")
    shown, best = layout(table, digits)
    if fmt == "latex":
        return _latex(shown, best)
    mark = (lambda s: f"**{s}**") if fmt == "markdown" else (lambda s: f"{s}*")
    shown = shown.where(~best, shown.apply(lambda column: column.map(mark)))  # pandas 2.0 too
    flat = shown.reset_index()
    style = "pipe" if fmt == "markdown" else "simple"
    return flat.to_markdown(index=False, tablefmt=style, disable_numparse=True)  # keep "40.0"


def caption(table: Table, domain: str) -> str:
    """What the cells are, in one line (printed above the table)."""
    where = "" if "domain" in [*table.rows, table.column] else f"; domain: {domain}"
    best = "; best per column marked" if len(table.cells) > 1 else ""
    delta = f"; Δ = {table.sets[0]} - {table.sets[1]}" if table.sets else ""
    what = METRICS.get(table.value, (table.value, True))[0]
    return (
        f"{what} (mean ± std over seeds); rows: {', '.join(table.rows)}; "
        f"columns: {table.column}{where}{best}{delta}"
    )


def _rank(row: tuple, orders: list[list]) -> tuple:
    return tuple(o.index(v) if v in o else len(o) for v, o in zip(row, orders, strict=False))


def _latex(shown: pd.DataFrame, best: pd.DataFrame) -> str:
    def esc(value) -> str:
        text = str(value)
        for char in "&%$#_{}":
            text = text.replace(char, f"\\{char}")
        return text.replace("±", "$\\pm$").replace("Δ", "$\\Delta$")

    names = [esc(n) for n in shown.index.names]
    lines = [
        f"\\begin{{tabular}}{{{'l' * len(names)}{'r' * shown.shape[1]}}}",
        "\\toprule",
        " & ".join([*names, *(esc(c) for c in shown.columns)]) + " \\\\",
        "\\midrule",
    ]
    for i, (key, values) in enumerate(shown.iterrows()):
        key = key if isinstance(key, tuple) else (key,)
        marks = best.iloc[i]
        cells = [
            f"\\textbf{{{esc(v)}}}" if b else esc(v) for v, b in zip(values, marks, strict=True)
        ]
        lines.append(" & ".join([*(esc(k) for k in key), *cells]) + " \\\\")
    return "\n".join([*lines, "\\bottomrule", "\\end{tabular}"])


def key_values(items: list[str], flag: str) -> dict[str, list[str]]:
    """``["stream=iid,sorted", ...]`` (repeated ``--where``/``--order``) as a dict of lists."""
    out = {}
    for item in items:
        key, sep, values = item.partition("=")
        if not sep:
            raise ValueError(f"{flag} {item!r}: expected KEY=VALUE[,VALUE...]")
        out[key] = values.split(",")
    return out


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ttabench compare",
        description="Collect every run's summary.csv under DIR into paper-style error tables:\n"
        "error % as mean +- std over seeds, best per column marked, unfinished runs listed,\n"
        "cells whose runs saw different streams flagged (!sha). Rules: results/README.md.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories, or CSVs")
    parser.add_argument("--rows", default="method", help="comma-separated row keys [method]")
    parser.add_argument("--columns", help="column key [domain; part with --parts]")
    parser.add_argument("--domain", default=ALL, help="summary row used unless domain is a key")
    add = parser.add_argument
    add("--where", action="append", default=[], metavar="KEY=V[,V]", help="keep only these")
    add("--order", action="append", default=[], metavar="KEY=V[,V]", help="values listed first")
    add("--against", nargs="+", type=Path, metavar="DIR", help="second result set, side by side")
    add("--labels", default="A,B", help="names of the two result sets with --against [A,B]")
    add("--format", choices=FORMATS, default="table")
    add("--digits", type=int, default=1, help="decimals [1]")
    add(
        "--metric",
        choices=list(METRICS),
        default="error",
        help="what the cells are: error or, with outliers in the stream, auroc, fpr95 (lower "
        "is better), h_score [error]",
    )
    add(
        "--parts",
        type=int,
        metavar="P",
        help="error by part of each domain: cut every domain visit's batches into P equal "
        "parts and tabulate part 1..P (key `part`; reads each run's online.csv)",
    )
    add(
        "--sensitivity",
        metavar="KEY",
        help="error against the swept knob KEY (e.g. method.optim.lr) per --rows configuration "
        "[rows method,stream], with the default, the best in hindsight and the values chosen "
        "by label-free criteria",
    )
    add("--heldout", nargs="+", type=Path, metavar="DIR", help="--sensitivity: the same sweep "
        "on held-out data; adds the value chosen there")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.digits < 0:
            raise ValueError(f"--digits must be >= 0, not {args.digits}")
        where, order = key_values(args.where, "--where"), key_values(args.order, "--order")
        parted = args.parts is not None
        if args.sensitivity and (args.against or parted or args.columns or args.format == "latex"):
            raise ValueError(
                "--sensitivity goes without --against, --parts, --columns (its columns are "
                "the values of KEY) and --format latex"
            )
        column = args.columns or (PART if parted else "domain")
        spec = {"rows": args.rows.split(","), "column": column, "domain": args.domain}
        found = collect(args.dirs)
        runs = select(_rows(found, args.parts), where)
        if args.metric != "error" and (args.sensitivity or parted):
            raise ValueError("--metric other than error goes without --sensitivity and --parts")
        if args.heldout and not args.sensitivity:
            raise ValueError("--heldout goes with --sensitivity KEY")
        if args.sensitivity:
            return _sensitivity(args, runs, select(found, where), order)
        if args.against:
            other_found = collect(args.against)
            other = select(_rows(other_found, args.parts), where)
            labels = args.labels.split(",")
            if len(labels) != 2:
                raise ValueError("--labels: two names, e.g. --labels new,ref")
            table = side_by_side(runs, other, labels, order=order, value=args.metric, **spec)
            found = pd.concat([found, other_found])
        else:
            table = build(runs, order=order, value=args.metric, **spec)
        pending = select(found, {k: v for k, v in where.items() if k != PART})
    except (FileNotFoundError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else exc
        print(f"ttabench compare: error: {message}", file=sys.stderr)
        return 2
    notes = [*table.notes, *unfinished(pending)]
    if parted:
        what = f"the k-th of {args.parts} equal parts of the batches of every domain visit"
        notes.insert(0, f"{PART} k: {what}")
    if args.format == "csv":
        print(render(table, "csv", args.digits), end="")
        for note in notes:
            print(note, file=sys.stderr)
        return 0
    prefix = "% " if args.format == "latex" else ""  # LaTeX output stays compilable
    print(f"{prefix}{caption(table, args.domain)}\n")
    print(render(table, args.format, args.digits))
    if notes:
        print()
    for note in notes:
        print(f"{prefix}{'- ' if args.format == 'markdown' else ''}{note}")
    return 0


def _sensitivity(args, runs: pd.DataFrame, found: pd.DataFrame, order: dict) -> int:
    """Print the sensitivity table (``--sensitivity KEY``); errors as the other tables'."""
    try:
        rows = args.rows.split(",") if args.rows != "method" else ["method", "stream"]
        heldout = (
            select(collect(args.heldout), key_values(args.where, "--where"))
            if args.heldout
            else None
        )
        table, notes = sensitivity_table(
            runs, args.sensitivity, rows, heldout, order, args.digits, args.domain
        )
    except (FileNotFoundError, KeyError, ValueError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) else exc
        print(f"ttabench compare: error: {message}", file=sys.stderr)
        return 2
    if args.format == "csv":
        print(table.to_csv(index=False), end="")
    else:
        style = "pipe" if args.format == "markdown" else "simple"
        print(
            f"Error % (mean ± std over seeds) against {args.sensitivity}; domain: {args.domain}\n"
        )
        print(table.to_markdown(index=False, tablefmt=style, disable_numparse=True))
    bullet = "- " if args.format == "markdown" else ""
    for note in [*notes, *unfinished(found)]:
        print(f"{bullet}{note}", file=sys.stderr if args.format == "csv" else sys.stdout)
    return 0


def _rows(runs: pd.DataFrame, parts: int | None) -> pd.DataFrame:
    """The rows a table is built from: the summaries, or with ``--parts`` rows by part."""
    return runs if parts is None else by_part(runs, parts)


def unfinished(runs: pd.DataFrame) -> list[str]:
    """One line per run that is not complete (never averaged in)."""
    last = runs.groupby("run_dir", sort=False).tail(1) if "run_dir" in runs else runs.tail(0)
    bad = last[last["status"] != "complete"]
    return [
        f"not tabulated ({r['status']}): {r['run_dir']} {r.get('message', '')}".rstrip()
        for _, r in bad.iterrows()
    ]
