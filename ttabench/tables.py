"""Paper-style error tables from collected runs (:func:`ttabench.results.collect`).

The rules, precisely (results/README.md repeats them for users):

- A run's **configuration** is everything that says what ran except its seeds: the choice of
  every group (``model``, ``dataset``, ``stream``, ``norm``, ``method``), ``batch_size``, every
  knob of every group (``model.*``, ``dataset.*``, ``stream.*``, ``norm.*``, ``method.*``; the
  stream and norm knobs ``seed`` and ``batch_size`` repeat run keys and are left out) and, per
  summary row, ``domain`` and ``severity``.
- A **cell** holds the complete runs of one configuration; they differ only in ``seed`` /
  ``stream_seed`` and the cell is the mean +- sample std (ddof 1) of their error % over the
  distinct seed pairs (identical repeats are averaged first, so they do not shrink the std).
- A configuration must never be averaged with another: a configuration key that varies inside
  a cell but is not a row or column key is added to the rows (noted under the table). When
  ``stream`` or ``norm`` is a row/column key, its values are labelled with the knobs that vary
  within the preset instead, e.g. ``dirichlet (delta=0.01)``.
- **Stream check**: runs of one configuration with the same ``stream_seed`` must have seen the
  same stream (``stream_sha256``); different seeds may legitimately differ. A cell breaking this
  (a code change, another data subset) is flagged ``!sha`` and not averaged; side by side, a
  difference whose two sides saw different streams is flagged too.
- Order: ``domain`` in the canonical corruption order (``ALL_CORRUPTIONS``, unknown names after
  them in first-seen order, ``all`` last); any other key numerically if its values are numbers,
  else alphabetically (stream presets have no natural order); ``order`` puts listed values first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ttabench.data.corruptions.tables import ALL_CORRUPTIONS
from ttabench.progress import PART
from ttabench.results import ALL, PARAM_GROUPS, fill_knob_defaults

CHOICES = ("model", "dataset", "stream", "norm", "method", "protocol")
#: appended to the protocol of results chosen with the test labels (``uses_labels``)
LABELS_MARK = " [uses labels]"
SEEDS = ("seed", "stream_seed")
# Knobs of these groups that repeat run keys with columns of their own (norm unmix: seed=${seed},
# batch_size=${stream.batch_size}): not configuration keys. dataset.seed is one (the noise seed).
_INTERPOLATED = {"seed", "batch_size"}
_INTERPOLATED_IN = ("stream", "norm")
FLAG = "!sha"


#: summary columns a table can show -> (what the cells are, whether lower is better)
METRICS = {
    "error": ("Error %", True),
    "auroc": ("AUROC %", False),
    "fpr95": ("FPR at 95 % TPR, %", True),
    "h_score": ("H-score %", False),
}


@dataclass
class Table:
    """Tidy cells (one row per cell) and how to lay them out.

    ``cells`` has the columns ``rows``, ``column``, then ``set`` (side by side only), ``mean``,
    ``std``, ``n`` (seeds) and ``flag`` (a note key, empty if none).
    """

    cells: pd.DataFrame
    rows: list[str]
    column: str
    order: dict[str, list]
    notes: list[str] = field(default_factory=list)
    sets: list[str] = field(default_factory=list)
    cross: set = field(default_factory=set)
    value: str = "error"


def resolve_key(runs: pd.DataFrame, name: str) -> str:
    """A column of ``runs`` by name, or a knob by its bare name (``delta``: ``stream.delta``)."""
    if name in runs.columns:
        return name
    matches = [f"{g}.{name}" for g in PARAM_GROUPS if f"{g}.{name}" in runs.columns]
    if len(matches) == 1:
        return matches[0]
    valid = sorted(c for c in runs.columns if c not in ("run_dir", "message"))
    raise KeyError(
        f"unknown key {name!r}"
        + (f" (ambiguous: {matches})" if matches else "")
        + f"; valid: {', '.join(valid)}"
    )


def select(runs: pd.DataFrame, where: Mapping[str, Sequence[str]]) -> pd.DataFrame:
    """Rows of ``runs`` whose ``key`` is one of the given values (numbers compare as numbers)."""
    for key, values in where.items():
        column = runs[resolve_key(runs, key)]
        keep = column.astype(str).isin(values)
        wanted = pd.to_numeric(pd.Series(list(values)), errors="coerce").dropna()
        if len(wanted):
            keep |= pd.to_numeric(column, errors="coerce").isin(wanted)
        runs = runs[keep]
    return runs


def build(
    runs: pd.DataFrame,
    rows: Sequence[str],
    column: str,
    domain: str = ALL,
    order: Mapping[str, Sequence[str]] | None = None,
    value: str = "error",
) -> Table:
    """The cells of an error table over the complete runs of ``runs`` (``value``: another
    numeric summary column to average instead, e.g. a label-free criterion).

    ``runs`` may carry a ``set`` column (two result sets: see :func:`side_by_side`). Unless
    ``domain`` is a row or column key, only the summary rows of ``domain`` (``all``) are used.
    """
    if column in rows:
        raise ValueError(
            f"{column!r} is both a row key and the column key: choose another column "
            f"(--columns) or drop it from --rows"
        )
    data = runs[runs["status"] == "complete"].copy()
    data = data.rename(columns={resolve_key(data, k): k for k in [*rows, column]})
    if "domain" not in [*rows, column]:
        data = data[data["domain"] == domain]
    if data.empty:
        raise ValueError("no complete run matches")
    if value in METRICS and value != "error":
        if not _measured(data, value):
            raise ValueError(
                f"no run has {value}: it measures outlier detection and needs outliers in the "
                "stream (stream.outliers.ratio > 0)"
            )
        data = data[pd.to_numeric(data[value], errors="coerce").notna()]  # runs that measured it
    asked, rows = list(rows), list(rows)
    notes = mark_labelled(data)
    for key in [*CHOICES, "batch_size", "severity", PART]:
        if key in data and key not in [*rows, column] and _varies(data, [*rows, column], key):
            rows.append(key)
    sort = {}
    for group in PARAM_GROUPS:
        if group in [*rows, column]:
            data[group], sort[group] = _refine(data, group, [*rows, column])
    for key in [c for c in data if is_knob(c) and c.split(".")[0] not in sort]:
        if key not in [*rows, column] and _varies(data, [*rows, column], key):
            rows.append(key)
    if rows != asked:
        notes.append(
            f"rows also split by {', '.join(rows[len(asked) :])}: it varies among the runs"
        )
    cells, flagged = _cells(data, [*rows, column, *(["set"] if "set" in data else [])], value)
    if flagged:
        notes.append(
            f"{FLAG}: runs of one configuration with the same stream_seed saw different streams "
            "(stream_sha256), not averaged: " + "; ".join(flagged)
        )
    orders = {
        k: _order(cells[k], k, (order or {}).get(k, ()), sort.get(k)) for k in [*rows, column]
    }
    table = Table(cells, rows, column, orders, notes, value=value)
    if "set" in data:
        table.sets = list(dict.fromkeys(data["set"]))
        table.cross = _cross_flags(data, [*rows, column])
    return table


def _measured(data: pd.DataFrame, value: str) -> bool:
    return value in data and pd.to_numeric(data[value], errors="coerce").notna().any()


def mark_labelled(data: pd.DataFrame) -> list[str]:
    """Label the protocol of runs that chose states with the test labels (in place), so no
    table shows them as online results; return the note saying so (none if no such run)."""
    if "uses_labels" not in data or "protocol" not in data:
        return []
    labelled = data["uses_labels"].astype(str) == "True"
    if not labelled.any():
        return []
    data.loc[labelled, "protocol"] = data.loc[labelled, "protocol"].astype(str) + LABELS_MARK
    names = ", ".join(sorted(set(data.loc[labelled, "protocol"])))
    return [f"{names}: states chosen per batch with the test labels (not an online result)"]


def side_by_side(a: pd.DataFrame, b: pd.DataFrame, labels: Sequence[str], **kw) -> Table:
    """Two result sets in one table: per row A's cells, B's cells and ``Δ = A - B``.

    Both sets get the same row keys (computed over their union). A difference is flagged when
    A and B saw different streams for one configuration and stream seed.
    """
    both = pd.concat([a.assign(set=labels[0]), b.assign(set=labels[1])], ignore_index=True)
    knobs = [c for c in both if is_knob(c)]  # a knob one set lacks reads "" there, as in collect
    both[knobs] = both[knobs].fillna("")
    table = build(fill_knob_defaults(both), **kw)
    keys = [*table.rows, table.column]
    cells = table.cells.set_index([*keys, "set"])
    mean, flag = cells["mean"].unstack("set"), cells["flag"].unstack("set").fillna("")
    if all(s in mean for s in labels):
        delta = pd.DataFrame({"mean": mean[labels[0]] - mean[labels[1]]}).dropna()
        clean = (flag.reindex(delta.index)[list(labels)] == "").all(axis=1)
        clean &= ~delta.index.isin(list(table.cross))
        delta = delta.assign(std=np.nan, n=0, flag=np.where(clean, "", FLAG), set="Δ")
        table.cells = pd.concat([table.cells, delta.reset_index()], ignore_index=True)
    if table.cross:
        table.notes.append(
            f"{FLAG} on Δ: {labels[0]} and {labels[1]} saw different streams (stream_sha256) "
            f"in {len(table.cross)} cells"
        )
    table.sets = [*labels, "Δ"]
    return table


def configurations(
    runs: pd.DataFrame, keep: Sequence[str] = ()
) -> tuple[pd.DataFrame, list[str], dict[str, dict]]:
    """Complete runs with ``stream``/``norm`` labelled by their varying knobs (as tables do).

    Knobs in ``keep`` stay separate columns (e.g. ``stream.delta`` for an error-vs-delta plot).
    Returns the relabelled rows, the configuration keys that vary among them (one figure per
    combination) and the sort keys of the refined labels (for :func:`order_of`).
    """
    data = runs[runs["status"] == "complete"].copy()
    mark_labelled(data)
    sort = {}
    for group in PARAM_GROUPS:
        if group in data:
            data[group], sort[group] = _refine(data, group, list(keep))
    keys = [*CHOICES, "batch_size", *(k for k in keep if is_knob(k))]
    return data, [k for k in keys if k in data and data[k].nunique(dropna=False) > 1], sort


def order_of(values: pd.Series, key: str, explicit: Sequence[str] = (), sort: dict | None = None):
    """Display order of a key's values, by the table rules (module docstring)."""
    return _order(values, key, explicit, sort)


def _cross_flags(data: pd.DataFrame, keys: list[str]) -> set[tuple]:
    """Cells whose sets share configuration and stream_seed but not the stream."""
    cross = set()
    for key, group in data.groupby([*keys, "stream_seed"], sort=False, dropna=False):
        per_set = group.groupby("set")["stream_sha256"].nunique()
        if group["stream_sha256"].nunique() > 1 and per_set.max() == 1:
            cross.add(tuple(key[:-1]))  # keys: rows + column, two at least
    return cross


def is_knob(column: str) -> bool:
    group, _, knob = column.partition(".")
    repeated = group in _INTERPOLATED_IN and knob in _INTERPOLATED
    return group in PARAM_GROUPS and bool(knob) and not repeated


def _varies(data: pd.DataFrame, by: list[str], key: str) -> bool:
    counts = data.groupby(by, sort=False, dropna=False)[key].nunique(dropna=False)
    return bool((counts > 1).any())


def _refine(data: pd.DataFrame, group: str, axes: list[str]) -> tuple[pd.Series, dict]:
    """``stream``/``norm`` labels naming the knobs that vary within a preset, and a sort key."""
    knobs = [c for c in data if is_knob(c) and c.startswith(f"{group}.") and c not in axes]
    label, sort = data[group].astype(str).copy(), {}
    for value, runs in data.groupby(group, sort=False):
        varying = [k for k in knobs if runs[k].nunique() > 1]
        for combo, part in runs.groupby(varying, sort=False) if varying else [((), runs)]:
            combo = combo if isinstance(combo, tuple) else (combo,)
            text = ", ".join(
                f"{k.split('.', 1)[1]}={v}" for k, v in zip(varying, combo, strict=True)
            )
            name = f"{value} ({text})" if text else str(value)
            label[part.index] = name
            sort[name] = (str(value), tuple(_sortable(v) for v in combo))
    return label, sort


def _cells(
    data: pd.DataFrame, keys: list[str], value: str = "error"
) -> tuple[pd.DataFrame, list[str]]:
    """Mean/std of ``value`` over seed pairs per cell; flag cells whose stream check fails."""
    data = data.assign(**{value: pd.to_numeric(data[value], errors="coerce")})
    out, flagged = [], []
    for key, cell in data.groupby(keys, sort=False, dropna=False):
        shas = cell.groupby("stream_seed", dropna=False)["stream_sha256"].nunique()
        per_seed = cell.groupby(list(SEEDS), dropna=False)[value].mean()
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row |= {"mean": per_seed.mean(), "std": per_seed.std(ddof=1), "n": len(per_seed)}
        row["flag"] = FLAG if (shas > 1).any() else ""
        if row["flag"]:
            dirs = sorted(set(cell["run_dir"])) if "run_dir" in cell else []
            flagged.append(f"{'/'.join(map(str, key))}: {', '.join(dirs[:4])}")
        out.append(row)
    return pd.DataFrame(out), flagged


def _order(values: pd.Series, key: str, explicit: Sequence[str], sort: dict | None) -> list:
    """Display order of a key's values (see the module docstring)."""
    seen = list(dict.fromkeys(values))
    if key == "domain":
        rank = {c: i for i, c in enumerate(ALL_CORRUPTIONS)}
        known = sorted((v for v in seen if v in rank), key=rank.get)
        return (
            known + [v for v in seen if v not in rank and v != ALL] + [v for v in seen if v == ALL]
        )
    base = (lambda v: sort[v][0]) if sort else str
    first = {v: i for i, v in enumerate(explicit)}

    def rank_of(v):
        number = as_number(base(v))
        return (
            first.get(base(v), first.get(str(base(v)).removesuffix(LABELS_MARK), len(first))),
            isinstance(number, str),
            number,
            sort[v][1] if sort else (),
        )

    return sorted(seen, key=rank_of)


def _sortable(value) -> tuple[bool, float | str]:
    """A sort key that orders numbers among themselves, then text (never compares the two)."""
    number = as_number(value)
    return (isinstance(number, str), number)


def as_number(value) -> float | str:
    """``value`` as a float where it is a number, else as text (ordering mixed values)."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)
