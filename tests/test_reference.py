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


def test_protocol_and_sensitivity_grids_are_the_documented_ones():
    ref = load_script("reference_results")
    grid = ref.protocol_sweeps(["2020", "2021", "2022"], 1000, quick=False)
    # baselines online: 2 x 2 streams x 3 seeds; each block: 4 methods x 3 protocols x 2 x 3,
    # then the oracle (4 x 2 x 3); the first block also under compute_aware at cost=passes
    assert [n_runs(g) for g in grid] == [12, 72, 24, 24, 72, 24]
    assert f"protocol.n_steps={ref.ORACLE_STEPS}" in grid[3] and "protocol.cost=passes" in grid[2]
    assert grid[1][0] == "method=tent,eta,sar,rotta" and "protocol=" not in " ".join(grid[0])
    sweeps = ref.sensitivity_sweeps(1000, quick=False)
    assert ref.HELDOUT in sweeps["heldout"][0] and ref.HELDOUT not in sweeps["test"][0]
    for overrides in [
        *ref.protocol_sweeps(["1"], 0, True),
        *ref.sensitivity_sweeps(0, True)["heldout"],
    ]:
        keys = [o.split("=", 1)[0] for o in overrides]
        assert len(keys) == len(set(keys))


def test_sensitivity_outputs_from_existing_runs(tmp_path):
    from .run_fixtures import write_run

    ref = load_script("reference_results")
    runs, out = tmp_path / "runs", tmp_path / "out"
    for split, shift in (("test", 0.0), ("heldout", 5.0)):
        for stream in ("iid", "dirichlet"):
            for i, lr in enumerate(("0.0001", "0.001", "0.01")):
                for seed in (2020, 2021):
                    error = 10.0 + 5 * abs(i - 1) + shift + seed - 2020
                    write_run(runs / split, method="tent", norm="bn", stream=stream, seed=seed,
                              errors={"fog": error}, method_params=f"optim.lr={lr}",
                              extra={"entropy": 1.0 - i / 4})  # fmt: skip
    argv = ["--grid", "sensitivity", "--skip-runs", "--sweep-dir", str(runs), "--out", str(out)]
    assert ref.main(argv) == 0
    table = (out / "tables" / "sensitivity_lr.md").read_text()
    assert "| tent     | dirichlet" in table and "0.001: 10.5" in table and "held-out" in table
    assert [p.name for p in (out / "figures").glob("*.png")]
    assert "sensitivity:begin" in (out / "README.md").read_text()
    assert (out / "summaries_heldout.csv.gz").exists()
