"""scripts/reference_results.py: the grid it sweeps, and (slow) its whole pipeline on a tiny
dataset: sweeps through ``ttabench run -m``, tables, figures and the README block."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from .conftest import load_script

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "reference_results.py"


def n_runs(overrides: list[str]) -> int:
    """Runs of one `ttabench run -m` sweep: the product of the comma-separated choices."""
    return math.prod(len(o.split("=", 1)[1].split(",")) for o in overrides if "[" not in o)


def test_the_grid_is_the_documented_one():
    ref = load_script("reference_results")
    grid = ref.sweeps(ref.METHODS, ref.STREAMS, [str(s) for s in ref.SEEDS], quick=False)
    bs64 = [g for g in grid if "stream.batch_size=1" not in g]
    bs1 = [g for g in grid if "stream.batch_size=1" in g]
    # 6 methods x (7 presets + dirichlet at delta 0.01) x 3 seeds; batch size 1: one seed.
    assert sum(map(n_runs, bs64)) == 6 * 8 * 3 and sum(map(n_runs, bs1)) == 6 * 8
    assert all(ref.BS1_CAP in g for g in bs1) and not any(ref.BS1_CAP in g for g in bs64)
    assert sum(ref.SMALL_DELTA in g for g in grid) == 2
    quick = ref.sweeps(ref.METHODS, ref.STREAMS, ["2020"], quick=True)
    for overrides in quick:  # no key given twice (the batch-size-1 cap is the quick size)
        keys = [o.split("=", 1)[0] for o in overrides]
        assert len(keys) == len(set(keys))


@pytest.mark.slow
def test_quick_pipeline_writes_tables_figures_and_readme(tmp_path):
    out, runs = tmp_path / "results", tmp_path / "runs"
    args = [sys.executable, str(SCRIPT), "--quick", "--out", str(out), "--sweep-dir", str(runs)]
    args += ["--methods", "source,bn", "--streams", "iid,dirichlet", "--seeds", "2020,2021"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stderr[-2000:]
    summaries = pd.read_csv(out / "summaries.csv.gz", keep_default_na=False)
    assert (summaries["status"] == "complete").all()
    assert summaries.groupby("run_dir").ngroups == 2 * 3 * 2 + 2 * 3  # bs 64: 2 seeds; bs 1: 1
    table = (out / "tables" / "streams_bs64.md").read_text()
    assert "dirichlet (delta=0.01)" in table and "| source " in table and "± " in table
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert "delta_stream=dirichlet_batch_size=64.png" in figures
    assert "online_stream=dirichlet-delta-0.01_batch_size=1.png" in figures
    readme = (out / "README.md").read_text()
    assert "tables/streams_bs64.md" in readme and "figures/delta_stream=dirichlet_b" in readme
    # Rerun: every run is complete, so nothing is redone and the outputs are the same.
    again = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("is complete; skipping") == 18
    assert (out / "tables" / "streams_bs64.md").read_text() == table
