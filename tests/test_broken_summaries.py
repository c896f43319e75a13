"""One unreadable ``summary.csv`` (empty, truncated, foreign) is skipped by ``compare`` and
``plot`` with a warning line naming it, never hiding the other runs; a rerun over it redoes the
run instead of failing."""

from __future__ import annotations

import pandas as pd
import pytest

from ttabench import cli
from ttabench.run import run

from .conftest import compose_run
from .run_fixtures import write_run

BROKEN = {
    "empty": "",
    "truncated": 'domain,severity,n,error,status\n"gaussian',
    "foreign": "a,b\n1,2\n",
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_compare_and_plot_skip_a_broken_summary_with_a_warning(tmp_path, capsys, kind):
    write_run(tmp_path / "runs", method="bn", online=True)
    write_run(tmp_path / "runs", method="tent", online=True)
    broken = tmp_path / "runs" / "broken" / "summary.csv"
    broken.parent.mkdir(parents=True)
    broken.write_text(BROKEN[kind])
    assert cli.main(["compare", str(tmp_path / "runs")]) == 0
    out, err = capsys.readouterr()
    assert "bn" in out and "tent" in out
    assert f"ttabench compare: warning: skipping {broken}" in err and "Traceback" not in err
    assert cli.main(["plot", str(tmp_path / "runs"), "--out", str(tmp_path / "figs")]) == 0
    assert f"ttabench plot: warning: skipping {broken}" in capsys.readouterr().err


@pytest.mark.parametrize("kind", list(BROKEN))
def test_a_rerun_over_a_broken_summary_redoes_the_run(tmp_path, kind):
    (tmp_path / "summary.csv").write_text(BROKEN[kind])
    summary = run(compose_run(), tmp_path)
    assert (summary["status"] == "complete").all()
    assert (pd.read_csv(tmp_path / "summary.csv")["status"] == "complete").all()
