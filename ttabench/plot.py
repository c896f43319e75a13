"""``ttabench plot DIR...``: the figures a TTA paper shows, as PNG files in ``--out``.

- ``online_<config>.png``: online accuracy over the stream (moving accuracy over ``--window``
  samples vs samples seen, from ``online.csv``), one line per method (mean over seeds), domain
  boundaries marked and named.
- ``delta_<config>.png``: error % vs the Dirichlet concentration ``stream.delta`` (log axis),
  one line per method, mean +- std over seeds; only configurations run at two or more deltas.
- ``corruption_<config>.png``: error % per corruption (canonical order, then ``all``), grouped
  bars per method, mean +- std over seeds.

One figure per combination of the configuration keys that vary among the runs (stream, batch
size, ...), named like the tables name them (:func:`ttabench.tables.configurations`). Only
complete runs are drawn. Figures are drawn on matplotlib ``Figure`` objects with the Agg canvas
(no pyplot, no display), so plotting works headless and leaves no global state.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ttabench.compare import key_values
from ttabench.paths import make_dir
from ttabench.results import ALL, collect, domain_visits
from ttabench.sensitivity import default_value, fixed_choices, swept_key
from ttabench.tables import METRICS, configurations, order_of, select

KINDS = ("online", "delta", "corruption")
SHORT = {
    "gaussian_noise": "gauss",
    "shot_noise": "shot",
    "impulse_noise": "impulse",
    "defocus_blur": "defocus",
    "glass_blur": "glass",
    "motion_blur": "motion",
    "zoom_blur": "zoom",
    "brightness": "bright",
    "elastic_transform": "elastic",
    "pixelate": "pixel",
    "jpeg_compression": "jpeg",
    "speckle_noise": "speckle",
    "gaussian_blur": "gblur",
}
DELTA = "stream.delta"


def online_curve(online: pd.DataFrame, window: int) -> tuple[np.ndarray, np.ndarray]:
    """Samples seen after each batch, and accuracy % over the last >= ``window`` samples."""
    seen = np.concatenate([[0], np.cumsum(online["n"].to_numpy())])
    hits = np.concatenate([[0], np.cumsum(online["correct"].to_numpy())])
    start = np.clip(np.searchsorted(seen, seen[1:] - window, side="right") - 1, 0, None)
    end = np.arange(1, len(seen))
    return seen[1:], 100.0 * (hits[end] - hits[start]) / (seen[end] - seen[start])


def domain_segments(online: pd.DataFrame) -> list[tuple[int, int, str]]:
    """(first sample, end sample, domain) of each stretch of one domain; [] for mixed streams.

    A stream whose batches change domain far more often than it has domains (pooled domains)
    has no boundaries worth drawing.
    """
    visits = domain_visits(online)
    if visits is None or not len(visits):
        return []
    seen = np.concatenate([[0], np.cumsum(online["n"].to_numpy())])
    change = np.flatnonzero(np.diff(visits)) + 1
    starts, ends = np.concatenate([[0], change]), np.concatenate([change, [len(visits)]])
    return [(seen[a], seen[b], online["domain"].iloc[a]) for a, b in zip(starts, ends, strict=True)]


def plot_online(runs: pd.DataFrame, line: str = "method", window: int | None = None, order=()):
    """One figure per configuration: online accuracy per ``line`` value (see module docstring)."""
    data, keys, _ = configurations(runs[runs["domain"] == ALL])
    colors = _colors(data, line, order)
    for title, group in _figures(data, keys, line):
        fig, ax = _axes((10, 4.5))
        total = int(group["n"].max())
        # Default: 2.5 % of the stream, at least one batch and 50 samples (batch size 1 is noisy).
        width = window or max(int(group["batch_size"].max()), 50, total // 40)
        for value, rows in _lines(group, line, order):
            curves = [pd.read_csv(Path(d) / "online.csv") for d in rows["run_dir"]]
            x, _ = online_curve(curves[0], width)
            ys = [np.interp(x, *online_curve(c, width)) for c in curves]
            ax.plot(x, np.mean(ys, axis=0), color=colors[value], lw=1.4, label=_legend(value, rows))
        segments = domain_segments(curves[0])
        for a, _, _ in segments[1:]:
            ax.axvline(a, color="0.4", lw=0.9, ls="--", zorder=1)  # above the grid
        if 0 < len(segments) <= 20:  # names of more would overlap
            top = ax.secondary_xaxis("top")
            top.set_xticks(
                [(a + b) / 2 for a, b, _ in segments],
                [SHORT.get(name, name) for _, _, name in segments],
                rotation=45 if len(segments) > 8 else 0,
                fontsize=7,
            )
            top.tick_params(length=0)
        pooled = "" if segments else " (domains pooled: no boundaries)"
        ax.set(xlabel=f"samples seen{pooled}", ylabel=f"accuracy % (last {width} samples)")
        ax.set(xlim=(0, total), ylim=(0, 100))
        _finish(fig, ax, title, "online accuracy")
        yield f"online{_slug(title)}", fig


def plot_delta(runs: pd.DataFrame, line: str = "method", order=(), metric: str = "error"):
    """One figure per configuration run at >= 2 deltas: error (or ``metric``, a summary
    column of :data:`~ttabench.tables.METRICS`) vs delta per ``line`` value."""
    runs, label = _metric(runs, metric)
    data, keys, _ = configurations(runs[runs["domain"] == ALL], keep=[DELTA])
    colors = _colors(data, line, order)
    for title, group in _figures(data, [k for k in keys if k != DELTA], line):
        if group[DELTA].nunique() < 2:
            continue
        fig, ax = _axes((6.5, 4.5))
        deltas = sorted(pd.to_numeric(group[DELTA]).unique())
        for value, rows in _lines(group, line, order):
            stats = _over_seeds(rows, [DELTA])
            stats = stats.assign(x=pd.to_numeric(stats[DELTA])).sort_values("x")
            ax.errorbar(
                stats["x"],
                stats["mean"],
                yerr=stats["std"].fillna(0),
                color=colors[value],
                marker="o",
                ms=4,
                capsize=3,
                label=_legend(value, rows),
            )
        ax.set_xscale("log")
        ax.set_xticks(deltas, [f"{d:g}" for d in deltas])
        ax.minorticks_off()
        ax.set(
            xlabel="stream.delta (Dirichlet concentration; smaller: stronger label shift)",
            ylabel=label,
        )
        _finish(fig, ax, title, f"{metric} vs delta")
        yield f"delta{_slug(title)}", fig


def plot_corruptions(runs: pd.DataFrame, line: str = "method", order=(), metric: str = "error"):
    """One figure per configuration: error (or ``metric``) per corruption, grouped bars per
    ``line`` value."""
    runs, label = _metric(runs, metric)
    data, keys, _ = configurations(runs)
    colors = _colors(data, line, order)
    for title, group in _figures(data, keys, line):
        group = group.assign(bar=_bar_names(group))
        domains = list(dict.fromkeys(_bar_order(group)))
        lines = list(_lines(group, line, order))
        fig, ax = _axes((max(8.0, 0.22 * len(domains) * (len(lines) + 1)), 4.5))
        width = 0.8 / len(lines)
        for i, (value, rows) in enumerate(lines):
            stats = _over_seeds(rows, ["bar"]).set_index("bar").reindex(domains)
            x = np.arange(len(domains)) + (i - (len(lines) - 1) / 2) * width
            ax.bar(
                x,
                stats["mean"],
                width,
                yerr=stats["std"].fillna(0),
                color=colors[value],
                error_kw={"elinewidth": 0.6, "capsize": 1.5},
                label=_legend(value, rows),
            )
        labels = [SHORT.get(d, d) for d in domains]  # e.g. fog, or fog-3 with several severities
        ax.set_xticks(range(len(domains)), labels, rotation=45, ha="right", fontsize=8)
        ax.set(ylabel=label, xlim=(-0.6, len(domains) - 0.4))
        if ALL in domains:  # the stream's overall error, set apart from the corruptions
            ax.axvline(len(domains) - 1.5, color="0.6", lw=0.7)
        _finish(fig, ax, title, f"{metric} per corruption")
        yield f"corruption{_slug(title)}", fig


def _bar_names(group: pd.DataFrame) -> pd.Series:
    """The bar of each summary row: its domain, or ``domain-severity`` when the runs saw a
    domain at several severities (``gradual`` streams), which are never averaged together."""
    several = group[group["domain"] != ALL].groupby("domain")["severity"].nunique().max()
    if not several or several <= 1:
        return group["domain"]
    named = group["domain"] + "-" + group["severity"].astype(str)
    return named.where(group["domain"] != ALL, group["domain"])


def _bar_order(group: pd.DataFrame) -> list[str]:
    """Bars in canonical corruption order, severities ascending within a corruption."""
    domains = order_of(group["domain"], "domain")
    rank = {d: i for i, d in enumerate(domains)}
    rows = group[["bar", "domain", "severity"]].drop_duplicates("bar")
    severity = pd.to_numeric(rows["severity"], errors="coerce").fillna(0)
    keyed = sorted(zip(rows["domain"].map(rank), severity, rows["bar"], strict=True))
    return [bar for _, _, bar in keyed]


def plot_sensitivity(runs: pd.DataFrame, line: str = "method", order=(), key: str | None = None):
    """One figure per configuration swept over ``key`` (>= 2 values): error vs the value per
    ``line`` value (mean +- std over seeds), the lowest error of each line starred (the best in
    hindsight) and the config's default dashed: how much a tuned number owes to tuning."""
    if not key:
        raise ValueError("--kind sensitivity needs --x KEY, the swept knob (e.g. optim.lr)")
    key = swept_key(runs, key)
    data, keys, _ = configurations(runs[runs["domain"] == ALL], keep=[key])
    colors = _colors(data, line, order)
    for title, group in _figures(data, [k for k in keys if k != key], line):
        xs = pd.to_numeric(group[key], errors="coerce")
        if xs.nunique() < 2:
            continue
        fig, ax = _axes((6.5, 4.5))
        for value, rows in _lines(group, line, order):
            stats = _over_seeds(rows, [key])
            stats = stats.assign(x=pd.to_numeric(stats[key], errors="coerce")).sort_values("x")
            color = colors[value]
            ax.errorbar(stats["x"], stats["mean"], yerr=stats["std"].fillna(0), color=color,
                        marker="o", ms=4, capsize=3, label=_legend(value, rows))  # fmt: skip
            best = stats.loc[stats["mean"].idxmin()]
            ax.plot(best["x"], best["mean"], marker="*", ms=14, color=color, mec="k", ls="")
        default = _as_float(default_value(key, fixed_choices(group)))
        if pd.notna(default):
            ax.axvline(default, ls="--", color="0.4", lw=1, label=f"default ({default:g})")
        positive = xs.dropna()
        if (positive > 0).all() and positive.max() / positive.min() >= 10:
            ax.set_xscale("log")
        ax.set(xlabel=f"{key} (star: lowest error = best in hindsight)", ylabel="error %")
        _finish(fig, ax, title, f"error vs {key}")
        yield f"sensitivity_{key.rsplit('.', 1)[-1]}{_slug(title)}", fig


PLOTS = {
    "online": plot_online,
    "delta": plot_delta,
    "corruption": plot_corruptions,
    "sensitivity": plot_sensitivity,
}


def _figures(data: pd.DataFrame, keys: list[str], line: str):
    """(title, runs) per figure: per combination of the keys that vary within a line's runs.

    A key fixed by the line value (``norm`` under ``method=bn``) labels the line, not a figure.
    """
    keys = [k for k in keys if k != line and _varies_within(data, line, k)]
    if not keys:
        yield {}, data
        return
    for values, group in data.groupby(keys, sort=True, dropna=False):
        yield dict(zip(keys, values, strict=True)), group


def _varies_within(data: pd.DataFrame, line: str, key: str) -> bool:
    return bool((data.groupby(line, dropna=False)[key].nunique(dropna=False) > 1).any())


def _colors(data: pd.DataFrame, line: str, order) -> dict:
    """A fixed colour per ``line`` value, the same in every figure."""
    values = order_of(data[line].drop_duplicates(), line, order)
    return {v: f"C{i % 10}" for i, v in enumerate(values)}


def _lines(group: pd.DataFrame, line: str, order):
    """(value, its runs) per ``line`` value, in table order."""
    for value in order_of(group[line].drop_duplicates(), line, order):
        yield value, group[group[line] == value]


def _as_float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _metric(runs: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, str]:
    """``runs`` with ``metric``'s values in the ``error`` column the figures read, and the axis
    label, without the runs that did not measure it (no outliers in their stream); an error
    when none did."""
    if metric not in METRICS:
        raise ValueError(f"--metric {metric!r}; valid: {', '.join(METRICS)}")
    if metric == "error":
        return runs, "error %"
    values = pd.to_numeric(runs.get(metric, pd.Series(dtype=float)), errors="coerce")
    if values.isna().all():
        raise ValueError(f"no run has {metric}: it needs outliers in the stream "
                         "(stream.outliers.ratio > 0)")  # fmt: skip
    return runs.assign(error=values)[values.notna()], METRICS[metric][0]  # runs that measured it


def _over_seeds(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    per_seed = rows.groupby([*by, "seed", "stream_seed"], dropna=False)["error"].mean()
    return per_seed.groupby(by).agg(["mean", "std", "count"]).reset_index()


def _legend(value, rows: pd.DataFrame) -> str:
    n = len(rows[["seed", "stream_seed"]].drop_duplicates())
    return f"{value} ({n} seeds)" if n > 1 else str(value)


def _axes(size: tuple[float, float]):
    fig = Figure(figsize=size, dpi=100, layout="constrained")  # makes room for labels, legend
    return fig, fig.add_subplot()


def _finish(fig: Figure, ax, title: dict, what: str) -> None:
    ax.grid(True, color="0.9", lw=0.6)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    text = ", ".join(f"{k}={v}" for k, v in title.items())
    fig.suptitle(f"{what}: {text}" if text else what, fontsize=10)


def _slug(title: dict) -> str:
    """``_stream=dirichlet-delta-0.01_batch_size=64``: a file name part per figure key."""
    clean = (re.sub(r"[^A-Za-z0-9.]+", "-", str(v)).strip("-") for v in title.values())
    return "".join(f"_{k}={v}" for k, v in zip(title, clean, strict=True))


def write(figures, out: Path) -> list[Path]:
    """Save (name, figure) pairs as ``out/<name>.png``; return the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, fig in figures:
        path = out / f"{name}.png"
        fig.savefig(path)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ttabench plot",
        description="PNG figures from run directories: online accuracy over the stream "
        "(online_*), error vs stream.delta (delta_*), error per corruption (corruption_*); one "
        "figure per configuration, one line or bar per --lines value.",
        epilog="example: ttabench plot outputs/sweeps/grid --out outputs/figures "
        "--where batch_size=64 --kind online,corruption",
    )
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep directories")
    parser.add_argument("--out", type=Path, default=Path("outputs/figures"), help="PNG folder")
    kinds = f"any of {','.join(PLOTS)} [{','.join(KINDS)}]"
    parser.add_argument("--kind", default=",".join(KINDS), help=kinds)
    parser.add_argument("--lines", default="method", help="one line (bar) per value [method]")
    parser.add_argument("--where", action="append", default=[], metavar="KEY=V[,V]")
    parser.add_argument("--order", default="", metavar="V,V", help="line values listed first")
    parser.add_argument("--window", type=int, help="online: samples per moving accuracy")
    parser.add_argument("--x", metavar="KEY", help="sensitivity: the swept knob (optim.lr)")
    parser.add_argument("--metric", default="error", choices=list(METRICS),
                        help="delta, corruption: the summary column drawn [error]")  # fmt: skip
    args = parser.parse_args(argv)
    kinds = args.kind.split(",")
    try:
        unknown = set(kinds) - set(PLOTS)
        if unknown:
            raise ValueError(f"--kind {sorted(unknown)}: valid: {', '.join(PLOTS)}")
        if args.metric != "error" and {"online", "sensitivity"} & set(kinds):
            raise ValueError("--metric other than error draws --kind delta,corruption only")
        if "sensitivity" in kinds and not args.x:
            raise ValueError("--kind sensitivity needs --x KEY, the swept knob (e.g. optim.lr)")
        runs = select(collect(args.dirs), key_values(args.where, "--where"))
        runs = runs.assign(error=pd.to_numeric(runs["error"], errors="coerce"))
        if not (runs["status"] == "complete").any():
            after = f" matching --where {' '.join(args.where)}" if args.where else ""
            raise ValueError(f"no complete run to plot{after}")
        _metric(runs[runs["status"] == "complete"], args.metric)  # measured at all?
        if "sensitivity" in kinds:
            swept_key(runs, args.x)  # not a knob: the list of valid ones, before drawing
        if args.window is not None and args.window < 1:
            raise ValueError(f"--window must be >= 1 (samples), not {args.window}")
        make_dir(args.out, "--out")
    except (FileNotFoundError, KeyError, ValueError) as exc:
        print(
            f"ttabench plot: error: {exc.args[0] if isinstance(exc, KeyError) else exc}",
            file=sys.stderr,
        )
        return 2
    order = [v for v in args.order.split(",") if v]
    for kind in kinds:
        extra = {"window": args.window} if kind == "online" else {}
        extra = {"key": args.x} if kind == "sensitivity" else extra
        extra = {"metric": args.metric} if kind in ("delta", "corruption") else extra
        try:
            paths = write(PLOTS[kind](runs, args.lines, order=order, **extra), args.out)
        except FileNotFoundError as exc:  # online.csv of a run listed in a combined table
            why = "the online figure reads each run's online.csv: give run directories"
            print(f"ttabench plot: error: {kind}: {exc.filename or exc} is missing ({why})",
                  file=sys.stderr)  # fmt: skip
            return 2
        for path in paths:
            print(path)
        if not paths and kind == "delta":
            print(
                "delta: skipped: no configuration was run at two or more stream.delta values",
                file=sys.stderr,
            )
        if not paths and kind == "sensitivity":
            print(f"sensitivity: skipped: no configuration was run at two or more numeric "
                  f"values of {args.x}", file=sys.stderr)  # fmt: skip
    return 0
