"""Error by part of each domain (``ttabench compare --parts``): visits cut into equal parts of
batches, part k pooled over visits, per domain and over the stream."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ttabench.compare import main
from ttabench.progress import by_part
from ttabench.results import (
    COST_COLUMNS,
    CRITERIA_COLUMNS,
    ONLINE_COLUMNS,
    PROTOCOL_COLUMNS,
    ROW_COLUMNS,
    collect,
    summarize,
)

from .run_fixtures import write_run

# (domain, correct) per batch of 10 samples: fog is visited twice (a gradual-like schedule).
BATCHES = [("fog", c) for c in (0, 2, 6, 8)] + [("snow", c) for c in (5, 5, 5, 5)]
BATCHES += [("fog", c) for c in (1, 9)]


def write_batches(run_dir, batches, n=10):
    rows = [
        {"step": i, "domain": d, "severity": 5, "n": n, "correct": c, "nonfinite": 0}
        for i, (d, c) in enumerate(batches)
    ]
    frame = pd.DataFrame(rows).reindex(columns=list(ONLINE_COLUMNS)).fillna(0)
    frame.to_csv(run_dir / "online.csv", index=False)


def run_with(tmp_path, batches, seed=1, method="unmix"):
    errors = {"fog": 50.0, "snow": 50.0}
    run_dir = write_run(tmp_path, method=method, seed=seed, errors=errors)
    write_batches(run_dir, batches)
    return run_dir


def test_part_k_of_every_visit_is_pooled_per_domain_and_over_the_stream(tmp_path):
    run_with(tmp_path, BATCHES)
    rows = by_part(collect([tmp_path]), parts=2).set_index(["domain", "part"])
    # fog: first visit halves (0, 2 | 6, 8), second visit halves (1 | 9).
    assert rows.loc[("fog", 1), "n"] == 30 and rows.loc[("fog", 1), "correct"] == 3
    assert rows.loc[("fog", 2), "correct"] == 6 + 8 + 9
    assert rows.loc[("fog", 1), "error"] == pytest.approx(90.0)
    assert rows.loc[("snow", 2), "error"] == pytest.approx(50.0)
    assert rows.loc[("all", 1), "correct"] == 0 + 2 + 5 + 5 + 1
    assert rows.loc[("all", 2), "n"] == 50
    assert set(rows["method"]) == {"unmix"} and set(rows["seed"]) == {1}


def test_a_visit_shorter_than_the_parts_spreads_its_batches_over_them(tmp_path):
    run_with(tmp_path, [("fog", 1), ("fog", 2), ("snow", 3), ("snow", 4), ("snow", 5)])
    rows = by_part(collect([tmp_path]), parts=4).set_index(["domain", "part"])["correct"]
    assert rows["fog"].to_dict() == {1: 1, 3: 2}
    assert rows["snow"].to_dict() == {1: 3, 2: 4, 3: 5}


def test_each_severity_of_a_gradual_ramp_is_a_visit_of_its_own(tmp_path):
    run_dir = run_with(tmp_path, [])
    rows = [
        {"step": i, "domain": "fog", "severity": s, "n": 10, "correct": c, "nonfinite": 0}
        for i, (s, c) in enumerate([(1, 0), (1, 10), (2, 0), (2, 10), (1, 0), (1, 10)])
    ]
    frame = pd.DataFrame(rows).reindex(columns=list(ONLINE_COLUMNS)).fillna(0)
    frame.to_csv(run_dir / "online.csv", index=False)
    parts = by_part(collect([tmp_path]), parts=2).set_index(["domain", "severity", "part"])
    assert parts.loc[("fog", "1", 1), "n"] == 20 and parts.loc[("fog", "1", 1), "correct"] == 0
    assert parts.loc[("fog", "2", 2), "error"] == pytest.approx(0.0)
    assert parts.loc[("all", "5", 1), "error"] == pytest.approx(100.0)


def test_a_pooled_stream_is_one_visit(tmp_path):
    """Batch size 1 under a mixed stream: every batch names one corruption, and the domain
    changes at almost every batch. Parts follow the stream, not these changes."""
    pooled = [("fog", 0), ("snow", 0), ("fog", 1), ("snow", 1)] * 5
    run_with(tmp_path, pooled)
    rows = by_part(collect([tmp_path]), parts=2).set_index(["domain", "part"])
    assert rows.loc[("all", 1), "n"] == 100 and rows.loc[("fog", 2), "n"] == 50
    assert rows.loc[("snow", 1), "error"] == pytest.approx(100 - 100 * 2 / 50)


def test_compare_parts_averages_each_part_over_seeds(tmp_path, capsys):
    rising = [("fog", c) for c in (0, 2, 6, 8)]
    run_with(tmp_path, rising, seed=1)
    run_with(tmp_path, [("fog", c + 1) for _, c in rising], seed=2)
    code = main([str(tmp_path), "--parts", "2", "--format", "csv"])
    cells = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert code == 0
    mean = cells.set_index("part")["mean"]
    assert mean[1] == pytest.approx((90.0 + 80.0) / 2)  # seed 1: 2/20 right, seed 2: 4/20
    assert mean[2] == pytest.approx((30.0 + 20.0) / 2)
    assert set(cells["n"]) == {2}


def test_compare_parts_labels_the_columns_and_explains_them(tmp_path, capsys):
    run_with(tmp_path, BATCHES)
    code = main([str(tmp_path), "--parts", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "columns: part" in out and "part=1" in out and "part=2" in out
    assert "k-th of 2 equal parts" in out


def test_parts_are_never_averaged_together_when_another_key_is_the_column(tmp_path, capsys):
    run_with(tmp_path, [("fog", c) for c in (0, 2, 6, 8)])
    code = main([str(tmp_path), "--parts", "2", "--columns", "stream", "--format", "csv"])
    cells = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert code == 0
    assert cells.set_index("part")["mean"].to_dict() == pytest.approx({1: 90.0, 2: 30.0})


def test_where_selects_parts_and_against_cuts_both_sets(tmp_path, capsys):
    run_with(tmp_path / "a", [("fog", c) for c in (0, 2, 6, 8)])
    run_with(tmp_path / "b", [("fog", c) for c in (2, 2, 6, 6)])
    args = [tmp_path / "a", "--parts", "2", "--where", "part=2", "--format", "csv"]
    code = main([str(a) for a in [*args, "--against", tmp_path / "b"]])
    cells = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert code == 0 and set(cells["part"]) == {2}
    mean = cells.set_index("set")["mean"]
    assert mean["A"] == pytest.approx(30.0) and mean["B"] == pytest.approx(40.0)
    assert mean["Δ"] == pytest.approx(-10.0)


def test_the_per_row_columns_dropped_are_those_summarize_writes_per_row():
    frame = summarize(
        ["fog"],
        [5],
        np.array([0, 0]),
        np.array([1, 0]),
        [{"n_classes": 2, "majority_frac": 0.5, "label_entropy": 0.7, "nonfinite": 0}],
        [np.array([0, 0])],
        {"method": "bn"},
    )
    per_row = [*ROW_COLUMNS, *COST_COLUMNS, *PROTOCOL_COLUMNS, *CRITERIA_COLUMNS]
    assert list(frame.columns) == [*per_row, "method"]


@pytest.mark.parametrize("case", ["combined csv", "no online.csv", "zero parts"])
def test_parts_without_per_batch_rows_is_a_clear_error(tmp_path, capsys, case):
    run_dir = run_with(tmp_path / "runs", BATCHES)
    target, parts = tmp_path / "runs", "2"
    if case == "combined csv":
        target = tmp_path / "all.csv"
        runs = collect([tmp_path / "runs"])  # as results/summaries.csv.gz: bare run names
        runs.assign(run_dir=runs["run_dir"].map(lambda d: d.split("/")[-1])).to_csv(target)
    elif case == "no online.csv":
        (run_dir / "online.csv").unlink()
    else:
        parts = "0"
    code = main([str(target), "--parts", parts])
    err = capsys.readouterr().err
    assert code == 2
    assert ("--parts must be >= 1" if case == "zero parts" else "not a combined CSV") in err
