"""Hyperparameter sensitivity and selection: ``ttabench compare DIR --sensitivity KEY``.

TTAB (Zhao et al., ICML 2023, Sec. 4) shows that TTA results hinge on hyperparameters chosen
with labels no online user has. For one knob KEY swept over several values (a ``+sweep=...``
preset), every configuration (method, stream, ...) gets one table row with:

- the test error at each value (mean +- std over seeds, by the rules of :mod:`ttabench.tables`);
- ``default``: the value the method's config gives for the dataset (its per-dataset table
  applied) and its error;
- ``best in hindsight``: the value with the lowest test error, chosen with the labels of the
  very stream it is scored on, and ``optimism`` = default - best: what per-stream tuning with
  test labels adds to a reported number;
- selections a user could make, each scored on the test stream with its regret over the best
  in hindsight: ``held-out`` (the lowest error of the same sweep on held-out corruptions,
  ``--heldout DIR``; TENT's authors tune on speckle_noise, gaussian_blur, spatter and saturate)
  and the label-free criteria every run logs (lowest mean ``entropy``, highest ``snd``, lowest
  ``consistency``; :mod:`ttabench.criteria`, Cygert et al. 2024), averaged over the stream.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from ttabench.config import config_dir
from ttabench.criteria import CRITERIA
from ttabench.methods.defaults import apply_dataset_defaults
from ttabench.results import ALL
from ttabench.tables import LABELS_MARK, as_number, build, is_knob, resolve_key

DEFAULT_PARTS = (
    "model",
    "dataset",
    "norm",
    "method",
    "protocol",
)  # what a knob's default depends on
BEST, DEFAULT, OPTIMISM, HELDOUT = "best in hindsight", "default", "optimism", "held-out"


def sensitivity_table(
    runs: pd.DataFrame,
    key: str,
    rows: Sequence[str] = ("method", "stream"),
    heldout: pd.DataFrame | None = None,
    order: Mapping[str, Sequence[str]] | None = None,
    digits: int = 1,
    domain: str = ALL,
) -> tuple[pd.DataFrame, list[str]]:
    """The sensitivity table of ``key`` (display strings, one row per configuration) and its
    notes. ``heldout``: runs of the same sweep on held-out data (a ``held-out`` column)."""
    key = swept_key(runs, key)
    test = build(runs, rows=list(rows), column=key, domain=domain, order=order)
    rows = test.rows  # build adds the configuration keys that vary
    means = _means(test.cells, rows, key)
    if means.shape[1] < 2:
        raise ValueError(
            f"{key} has one value among the complete runs: nothing to compare (sweep it, e.g. "
            "ttabench run -m +sweep=sensitivity_lr)"
        )
    values = [v for v in test.order[key] if v in means.columns]
    selections: dict[str, pd.Series] = {}
    notes_extra: list[str] = []
    if heldout is not None:
        column = swept_key(heldout, key)
        held = build(heldout, rows=list(rows), column=column, domain=domain, order=order)
        if held.rows != rows:
            extra = sorted(set(held.rows) ^ set(rows))
            raise ValueError(
                f"the held-out runs do not match the test runs: {', '.join(extra)} varies in "
                "one set only (run the same sweep on the held-out data)"
            )
        selections[HELDOUT] = _argbest(_means(held.cells, rows, key), larger=False)
        unmatched = means.index.difference(selections[HELDOUT].index)
        if len(unmatched):
            notes_extra.append(f"{HELDOUT}: no held-out runs for {len(unmatched)} row(s)")
    for name, larger_is_better in CRITERIA.items():
        if name in runs and pd.to_numeric(runs[name], errors="coerce").notna().any():
            scores = build(runs, list(rows), key, domain=domain, order=order, value=name).cells
            selections[name] = _argbest(_means(scores, rows, key), larger_is_better)
    text = test.cells.assign(text=[_text(c, digits) for _, c in test.cells.iterrows()])
    shown = text.set_index([*rows, key])["text"].unstack(key).reindex(columns=values).fillna("")
    shown = shown.reindex(means.index)
    defaults = _defaults(runs, rows, means.index, key)
    out = shown.rename(columns={v: f"{key.rsplit('.', 1)[-1]}={v}" for v in values})
    best = _argbest(means, larger=False)
    out[DEFAULT] = [_pick(means, r, defaults.get(r), digits) for r in means.index]
    out[BEST] = [_pick(means, r, best.get(r), digits) for r in means.index]
    out[OPTIMISM] = [_gap(means, r, defaults.get(r), best.get(r), digits) for r in means.index]
    for name, pick in selections.items():
        out[name] = [
            _pick(means, r, pick.get(r), digits, regret_to=best.get(r)) for r in means.index
        ]
    notes = [*test.notes, *notes_extra]
    notes.append(
        f"{DEFAULT}: the config's value for the dataset; {BEST}: the lowest test error (chosen "
        f"with the test labels); {OPTIMISM} = {DEFAULT} - {BEST}"
    )
    if selections:
        notes.append(
            "selections (value: test error (regret over the best in hindsight)): "
            + "; ".join(_explain(name) for name in selections)
        )
    return out.reset_index(), notes


def _text(cell: pd.Series, digits: int) -> str:
    if cell["flag"] or np.isnan(cell["mean"]):
        return cell["flag"]
    spread = f" ± {cell['std']:.{digits}f}" if cell["n"] > 1 else ""
    return f"{cell['mean']:.{digits}f}{spread}"


def _means(cells: pd.DataFrame, rows: list[str], key: str) -> pd.DataFrame:
    """Cell means (flagged cells left out) as configurations x values of ``key``."""
    clean = cells[cells["flag"] == ""]
    frame = clean.set_index([*rows, key])["mean"].unstack(key)
    return frame.reindex(columns=sorted(frame.columns, key=_numbers_first))


def _numbers_first(value) -> tuple[bool, float | str]:
    number = as_number(value)
    return (isinstance(number, str), number if isinstance(number, float) else str(number))


def _argbest(frame: pd.DataFrame, larger: bool) -> pd.Series:
    """Per row, the column of the largest (smallest) value; rows without a number left out."""
    frame = frame.dropna(how="all")
    return frame.idxmax(axis=1) if larger else frame.idxmin(axis=1)


def _pick(means: pd.DataFrame, row, value, digits: int, regret_to=None) -> str:
    """``value: error`` (and ``(+regret)`` over the value ``regret_to``)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    column = _match(means.columns, value)
    if column is None:
        return f"{value}: not run"
    error = means.loc[row, column]
    text = f"{column}: {error:.{digits}f}"
    if regret_to is not None and _match(means.columns, regret_to) is not None:
        text += f" (+{error - means.loc[row, _match(means.columns, regret_to)]:.{digits}f})"
    return text


def _gap(means: pd.DataFrame, row, default, best, digits: int) -> str:
    a, b = _match(means.columns, default), _match(means.columns, best)
    if a is None or b is None:
        return ""
    return f"{means.loc[row, a] - means.loc[row, b]:.{digits}f}"


def _match(columns, value):
    """The column equal to ``value`` (numbers compare as numbers: ``1e-3`` is ``0.001``)."""
    if value is None:
        return None
    for column in columns:
        if str(column) == str(value) or as_number(column) == as_number(value):
            return column
    return None


def _explain(name: str) -> str:
    if name == HELDOUT:
        return f"{HELDOUT}: lowest error on the held-out runs"
    return f"{name}: {'highest' if CRITERIA[name] else 'lowest'} mean {name} on the test stream"


def swept_key(runs: pd.DataFrame, name: str) -> str:
    """The knob ``name`` as a column of ``runs`` (``optim.lr``: ``method.optim.lr``); a result
    column or a seed is no hyperparameter and is refused with the valid keys."""
    key = resolve_key(runs, name)
    if not (is_knob(key) or key == "batch_size"):
        knobs = sorted(c for c in runs.columns if is_knob(c))
        raise ValueError(
            f"--sensitivity {name}: not a knob of any config group; valid: {', '.join(knobs)}"
        )
    return key


def _defaults(runs: pd.DataFrame, rows: list[str], index: pd.Index, key: str) -> dict:
    """The config's value of ``key`` for every configuration row (None where unknown)."""
    fixed = fixed_choices(runs[runs["status"] == "complete"])
    found = {}
    for row in index:
        row = row if isinstance(row, tuple) else (row,)
        mine = {p: _choice(row[rows.index(p)]) for p in DEFAULT_PARTS if p in rows}
        found[row if len(row) > 1 else row[0]] = default_value(key, fixed | mine)
    return found


def fixed_choices(runs: pd.DataFrame) -> dict[str, str]:
    """The config choices that decide a default (model, dataset, norm, method) where ``runs``
    have one value (a preset label's knobs stripped: ``dirichlet (delta=0.1)``)."""
    return {
        part: _choice(runs[part].iloc[0])
        for part in DEFAULT_PARTS
        if part in runs and runs[part].nunique() == 1
    }


def _choice(label) -> str:
    """The config option behind a table label (``oracle_selection [uses labels] (n_steps=3)``)."""
    return str(label).replace(LABELS_MARK, "").split(" (")[0]


def default_value(key: str, choices: Mapping[str, str]) -> str | None:
    """``key``'s value in the config composed from ``choices`` (``method=tent`` ...), after the
    method's per-dataset table; None if it cannot be composed (a config of another version)."""
    overrides = [f"{group}={name}" for group, name in choices.items()]
    try:
        if GlobalHydra.instance().is_initialized():
            cfg = compose("run", overrides)
        else:
            with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
                cfg = compose("run", overrides)
        apply_dataset_defaults(cfg, [])
        value = OmegaConf.select(cfg, key)
    except Exception:  # noqa: BLE001 (an unknown preset or key: no default to show)
        return None
    return None if value is None else str(value)
