"""Error by position within each domain (``ttabench compare --parts``): visits cut into equal
parts of batches, part k pooled over visits, per domain and over the stream."""

from __future__ import annotations

import pandas as pd
import pytest

from ttabench.compare import main
from ttabench.progress import by_position
from ttabench.results import ONLINE_COLUMNS, collect

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
    rows = by_position(collect([tmp_path]), parts=2).set_index(["domain", "position"])
    # fog: first visit halves (0, 2 | 6, 8), second visit halves (1 | 9).
    assert rows.loc[("fog", 1), "n"] == 30 and rows.loc[("fog", 1), "correct"] == 3
    assert rows.loc[("fog", 2), "correct"] == 6 + 8 + 9
    assert rows.loc[("fog", 1), "error"] == pytest.approx(90.0)
    assert rows.loc[("snow", 2), "error"] == pytest.approx(50.0)
    assert rows.loc[("all", 1), "correct"] == 0 + 2 + 5 + 5 + 1
    assert rows.loc[("all", 2), "n"] == 50
    assert set(rows["method"]) == {"unmix"} and set(rows["seed"]) == {1}


def test_a_visit_shorter_than_the_parts_fills_the_first_positions(tmp_path):
    run_with(tmp_path, [("fog", 1), ("fog", 2), ("fog", 3)])
    rows = by_position(collect([tmp_path]), parts=4)
    fog = rows[rows["domain"] == "fog"].set_index("position")["correct"]
    assert fog.to_dict() == {1: 1, 2: 2, 3: 3}


def test_compare_parts_averages_positions_over_seeds(tmp_path, capsys):
    rising = [("fog", c) for c in (0, 2, 6, 8)]
    run_with(tmp_path, rising, seed=1)
    run_with(tmp_path, [("fog", c + 1) for _, c in rising], seed=2)
    code = main([str(tmp_path), "--parts", "2", "--format", "csv"])
    cells = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert code == 0
    mean = cells.set_index("position")["mean"]
    assert mean[1] == pytest.approx((90.0 + 80.0) / 2)  # seed 1: 2/20 right, seed 2: 4/20
    assert mean[2] == pytest.approx((30.0 + 20.0) / 2)
    assert set(cells["n"]) == {2}


def test_compare_parts_labels_the_columns_and_explains_them(tmp_path, capsys):
    run_with(tmp_path, BATCHES)
    code = main([str(tmp_path), "--parts", "2"])
    out = capsys.readouterr().out
    assert code == 0
    assert "columns: position" in out and "position=1" in out and "position=2" in out
    assert "k-th of 2 equal parts" in out


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
