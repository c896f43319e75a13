"""``ttabench plot`` on synthetic run directories: the curves, boundaries and bars are the
ones the files describe, and the PNG files are written, non-empty and not blank."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from ttabench.plot import (
    domain_segments,
    main,
    online_curve,
    plot_corruptions,
    plot_delta,
    plot_online,
)
from ttabench.results import collect

from .run_fixtures import DOMAINS, write_run

ERRORS = {"bn": 20.0, "source": 60.0}


@pytest.fixture
def sweep(tmp_path):
    """bn and source on iid and dirichlet at two deltas, two seeds, with online.csv files."""
    for method, error in ERRORS.items():
        for seed in (1, 2):
            for stream, delta in (("iid", 0.1), ("dirichlet", 0.1), ("dirichlet", 0.01)):
                errors = {d: error + 5 * i + 10 * (delta < 0.1) for i, d in enumerate(DOMAINS)}
                write_run(
                    tmp_path,
                    method=method,
                    stream=stream,
                    delta=delta,
                    seed=seed,
                    errors=errors,
                    online=True,
                )
    return tmp_path


def test_online_curve_is_the_moving_accuracy_over_the_window():
    online = pd.DataFrame({"n": [10, 10, 10, 5], "correct": [10, 0, 5, 5]})
    x, y = online_curve(online, window=20)
    assert x.tolist() == [10, 20, 30, 35]
    # After 30 samples the last 20 are batches 2-3 (5 / 20); after 35 the window reaches back
    # to the first batch end that leaves >= 20 samples: batches 2-4 (10 / 25).
    assert y.tolist() == pytest.approx([100.0, 50.0, 25.0, 40.0])


def test_domain_segments_follow_the_stream_and_skip_pooled_streams():
    online = pd.DataFrame(
        {"n": [64] * 5, "domain": ["fog", "fog", "snow", "snow", "snow"], "severity": 5}
    )
    assert domain_segments(online) == [(0, 128, "fog"), (128, 320, "snow")]
    mixed = pd.DataFrame({"n": [1] * 40, "domain": ["fog", "snow"] * 20, "severity": 5})
    assert domain_segments(mixed) == []


def test_online_figure_has_a_line_per_method_and_the_domain_boundaries(sweep):
    figures = dict(plot_online(collect([sweep])))
    # One figure per stream configuration; the delta of dirichlet names it.
    assert sorted(figures) == [
        "online_stream=dirichlet-delta-0.01",
        "online_stream=dirichlet-delta-0.1",
        "online_stream=iid",
    ]
    ax = figures["online_stream=iid"].axes[0]
    curves = [
        line for line in ax.get_lines() if line.get_label() in ("bn (2 seeds)", "source (2 seeds)")
    ]
    assert len(curves) == 2
    boundaries = sorted(
        line.get_xdata()[0] for line in ax.get_lines() if line.get_linestyle() == "--"
    )
    assert boundaries == [256, 512]  # 3 domains of 256 samples
    bn = next(c for c in curves if c.get_label().startswith("bn"))
    assert np.mean(bn.get_ydata()[-4:]) > 50  # bn's accuracy ~ 100 - 30 on the last domain


def test_delta_figure_only_for_configurations_run_at_several_deltas(sweep):
    figures = dict(plot_delta(collect([sweep])))
    assert list(figures) == ["delta_stream=dirichlet"]
    ax = figures["delta_stream=dirichlet"].axes[0]
    assert ax.get_xscale() == "log"
    (bn,) = [c for c in ax.containers if c.get_label() == "bn (2 seeds)"]
    x, y = bn.lines[0].get_xdata(), bn.lines[0].get_ydata()
    assert list(x) == [0.01, 0.1]
    assert list(y) == pytest.approx([ERRORS["bn"] + 5 + 10, ERRORS["bn"] + 5])  # 'all' = mean


def test_corruption_bars_are_in_canonical_order_with_the_errors(sweep):
    runs = collect([sweep])
    figures = dict(plot_corruptions(runs[runs["stream"] == "iid"]))
    ax = figures["corruption"].axes[0]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["gauss", "fog", "contrast", "all"]
    bn = next(c for c in ax.containers if c.get_label() == "bn (2 seeds)")
    heights = [bar.get_height() for bar in bn]
    by_domain = {d: ERRORS["bn"] + 5 * i for i, d in enumerate(DOMAINS)}
    expected = [by_domain["gaussian_noise"], by_domain["fog"], by_domain["contrast"]]
    assert heights == pytest.approx([*expected, np.mean(expected)])


def test_plot_writes_non_blank_png_files(sweep, tmp_path, capsys):
    out = tmp_path / "figures"
    assert main([str(sweep), "--out", str(out), "--where", "stream=iid"]) == 0
    captured = capsys.readouterr()
    paths = sorted(out.glob("*.png"))
    assert [p.name for p in paths] == ["corruption.png", "online.png"]
    assert "delta: skipped" in captured.err  # a single delta left after --where
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        pixels = imread(path)
        assert pixels.shape[0] > 300 and pixels.std() > 0.05  # drawn, not a blank canvas


def test_plot_without_complete_runs_is_an_error(tmp_path, capsys):
    write_run(tmp_path, status="failed")
    assert main([str(tmp_path), "--out", str(tmp_path / "f")]) == 2
    assert "no complete run" in capsys.readouterr().err


def test_corruption_bars_keep_severities_apart(tmp_path):
    """A gradual stream sees each corruption at several severities: one bar each, not a mean."""
    run_dir = write_run(tmp_path, errors={"fog": 10.0})
    summary = pd.read_csv(run_dir / "summary.csv")
    fog5 = summary[summary["domain"] == "fog"]
    fog1 = fog5.assign(severity=1, error=50.0)
    pd.concat([fog1, summary]).to_csv(run_dir / "summary.csv", index=False)
    (figure,) = (fig for _, fig in plot_corruptions(collect([tmp_path])))
    ax = figure.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["fog-1", "fog-5", "all"]
    bn = next(c for c in ax.containers if c.get_label() == "bn")
    assert [bar.get_height() for bar in bn][:2] == [50.0, 10.0]
