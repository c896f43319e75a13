"""``ttabench compare`` on synthetic summary files: grouping, mean/std over seeds, canonical
order, best marks, the stream (SHA-256) check, side by side, formats."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from ttabench.compare import main
from ttabench.results import collect
from ttabench.tables import FLAG, build

from .run_fixtures import DOMAINS, write_run

SEED_ERRORS = {  # method -> per-seed error of every domain (seed i: base + offsets[i])
    "bn": (20.0, 22.0, 27.0),
    "source": (60.0, 61.0, 65.0),
}


def grid(root, shift: float = 0.0, **kw):
    """bn and source, 3 seeds; domain d of seed i has error base_i + d + shift."""
    for method, bases in SEED_ERRORS.items():
        for seed, base in enumerate(bases, start=1):
            errors = {d: base + i + shift for i, d in enumerate(DOMAINS)}
            write_run(root, method=method, seed=seed, errors=errors, **kw)


def compare(capsys, *args: str) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def markdown_rows(text: str) -> list[list[str]]:
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split("|")] for line in lines]


def test_cells_are_mean_and_std_over_seeds(tmp_path):
    grid(tmp_path)
    table = build(collect([tmp_path]), rows=["method"], column="domain")
    cells = table.cells.set_index(["method", "domain"])
    for method, bases in SEED_ERRORS.items():
        for i, domain in enumerate(DOMAINS):
            values = np.array(bases) + i
            cell = cells.loc[(method, domain)]
            assert cell["mean"] == pytest.approx(values.mean())
            assert cell["std"] == pytest.approx(values.std(ddof=1))
            assert cell["n"] == 3 and cell["flag"] == ""


def test_markdown_columns_follow_the_canonical_corruption_order_and_mark_the_best(tmp_path, capsys):
    grid(tmp_path)
    code, out, _ = compare(capsys, tmp_path, "--format", "markdown")
    assert code == 0
    header, _, *body = markdown_rows(out)
    # Written contrast, gaussian_noise, fog: shown in CIFAR-C order, `all` last.
    assert header == ["method", "gaussian_noise", "fog", "contrast", "all"]
    rows = {r[0]: r[1:] for r in body}
    bn = np.array(SEED_ERRORS["bn"]) + DOMAINS.index("gaussian_noise")
    assert rows["bn"][0] == f"**{bn.mean():.1f} ± {bn.std(ddof=1):.1f}**"
    assert all(c.startswith("**") for c in rows["bn"]), "bn is best in every column"
    assert not any(c.startswith("**") for c in rows["source"])


def test_terminal_table_marks_the_best_with_a_star(tmp_path, capsys):
    grid(tmp_path)
    _, out, _ = compare(capsys, tmp_path)
    lines = {x.split()[0]: x for x in out.splitlines()[2:] if x and not x.startswith("-")}
    assert lines["bn"].count("*") == 4 and "*" not in lines["source"]
    # Best per column: with methods as columns, the best domain of each method is marked.
    _, out, _ = compare(capsys, tmp_path, "--columns", "method", "--rows", "domain")
    lines = {x.split()[0]: x for x in out.splitlines()[2:] if x and not x.startswith("-")}
    assert lines["contrast"].count("*") == 2 and "*" not in lines["fog"]


def test_failed_and_incomplete_runs_are_listed_not_averaged(tmp_path, capsys):
    grid(tmp_path)
    write_run(tmp_path, method="bn", seed=9, errors=dict.fromkeys(DOMAINS, 99.0), status="failed")
    incomplete = write_run(tmp_path, method="bn", seed=8, status="incomplete")
    code, out, _ = compare(capsys, tmp_path, "--columns", "stream", "--format", "markdown")
    assert code == 0
    rows = {r[0]: r[1] for r in markdown_rows(out)[2:]}
    assert rows["bn"].startswith(f"**{np.mean(SEED_ERRORS['bn']) + 1:.1f} ±")  # all = mean
    assert "not tabulated (failed)" in out and f"not tabulated (incomplete): {incomplete}" in out


def test_different_streams_for_one_stream_seed_are_flagged_not_averaged(tmp_path, capsys):
    # Same configuration and stream_seed, different streams (e.g. a code change): flagged.
    write_run(tmp_path / "a", method="bn", seed=1, stream_seed=7, sha="old")
    write_run(tmp_path / "a", method="bn", seed=2, stream_seed=7, sha="new")
    # Different stream seeds may see different streams: averaged as usual.
    for seed in (1, 2):
        write_run(tmp_path / "a", method="source", seed=seed)
    table = build(collect([tmp_path]), rows=["method"], column="domain")
    flags = table.cells.set_index(["method", "domain"])["flag"]
    assert (flags.loc["bn"] == FLAG).all() and (flags.loc["source"] == "").all()
    code, out, _ = compare(capsys, tmp_path, "--format", "markdown")
    bn = next(r for r in markdown_rows(out) if r[0] == "bn")
    assert bn[1:] == [FLAG] * 4, "no number is shown for a flagged cell"
    assert "saw different streams" in out and "ss=7" in out


def test_a_varying_configuration_key_splits_rows_instead_of_averaging(tmp_path, capsys):
    write_run(tmp_path, method="bn", stream="iid", errors=dict.fromkeys(DOMAINS, 10.0))
    write_run(tmp_path, method="bn", stream="dirichlet", errors=dict.fromkeys(DOMAINS, 30.0))
    code, out, _ = compare(capsys, tmp_path, "--format", "markdown")
    rows = {tuple(r[:2]): r[2] for r in markdown_rows(out)[2:]}
    assert rows == {("bn", "dirichlet"): "30.0", ("bn", "iid"): "**10.0**"}
    assert "rows also split by stream" in out


def test_knobs_are_keys_and_label_presets_that_vary(tmp_path, capsys):
    for delta, error in ((0.1, 20.0), (0.01, 40.0)):
        write_run(tmp_path, stream="dirichlet", delta=delta, errors=dict.fromkeys(DOMAINS, error))
    write_run(tmp_path, stream="iid", errors=dict.fromkeys(DOMAINS, 10.0))
    _, out, _ = compare(
        capsys,
        tmp_path,
        "--columns",
        "delta",
        "--where",
        "stream=dirichlet",
        "--format",
        "markdown",
    )
    header, _, row = markdown_rows(out)
    assert header == ["method", "delta=0.01", "delta=0.1"]  # numeric order
    assert row == ["bn", "40.0", "20.0"]  # one cell per column: nothing to mark as best
    _, out, _ = compare(capsys, tmp_path, "--columns", "stream", "--format", "markdown")
    assert markdown_rows(out)[0] == [
        "method",
        "dirichlet (delta=0.01)",
        "dirichlet (delta=0.1)",
        "iid",
    ]


def test_side_by_side_shows_both_sets_and_their_difference(tmp_path, capsys):
    grid(tmp_path / "new")
    grid(tmp_path / "ref", shift=2.5)
    code, out, _ = compare(
        capsys,
        tmp_path / "new",
        "--against",
        tmp_path / "ref",
        "--labels",
        "new,ref",
        "--columns",
        "stream",
        "--format",
        "markdown",
    )
    assert code == 0
    rows = {(r[0], r[1]): r[2] for r in markdown_rows(out)[2:]}
    assert rows[("bn", "Δ")] == rows[("source", "Δ")] == "-2.5"
    assert rows[("bn", "new")].startswith(f"**{np.mean(SEED_ERRORS['bn']) + 1:.1f}")
    assert rows[("bn", "ref")].startswith(f"**{np.mean(SEED_ERRORS['bn']) + 3.5:.1f}")


def test_side_by_side_flags_a_difference_over_different_streams(tmp_path, capsys):
    grid(tmp_path / "new", sha="after-change")
    grid(tmp_path / "ref")
    _, out, _ = compare(
        capsys, tmp_path / "new", "--against", tmp_path / "ref", "--format", "markdown"
    )
    deltas = [r[2:] for r in markdown_rows(out) if r[1] == "Δ"]
    assert deltas and all(c == FLAG for r in deltas for c in r)
    assert "saw different streams" in out


def test_latex_and_csv_formats(tmp_path, capsys):
    grid(tmp_path)
    _, out, _ = compare(capsys, tmp_path, "--format", "latex")
    assert "\\begin{tabular}" in out and "\\textbf{" in out and "$\\pm$" in out
    assert "gaussian\\_noise" in out and out.splitlines()[0].startswith("%")
    _, out, err = compare(capsys, tmp_path, "--format", "csv")
    cells = pd.read_csv(io.StringIO(out))
    assert list(cells.columns) == ["method", "domain", "mean", "std", "n", "flag"]
    fog = cells.set_index(["method", "domain"]).loc[("source", "fog"), "mean"]
    assert fog == pytest.approx(np.mean(SEED_ERRORS["source"]) + DOMAINS.index("fog"), abs=1e-3)


def test_overlapping_arguments_and_combined_csv_are_read_once(tmp_path, capsys):
    grid(tmp_path / "sweep")
    nested = tmp_path / "sweep" / next(p.name for p in (tmp_path / "sweep").iterdir())
    _, once, _ = compare(capsys, tmp_path / "sweep", "--format", "csv")
    _, twice, _ = compare(capsys, tmp_path / "sweep", nested, "--format", "csv")
    assert once == twice  # n stays 3: the nested run is not counted twice
    combined = tmp_path / "summaries.csv"
    collect([tmp_path / "sweep"]).to_csv(combined, index=False)
    _, from_csv, _ = compare(capsys, combined, "--format", "csv")
    assert from_csv == once


def test_bad_keys_are_errors_that_list_the_valid_ones(tmp_path, capsys):
    grid(tmp_path)
    code, _, err = compare(capsys, tmp_path, "--rows", "nope")
    assert code == 2 and "unknown key 'nope'" in err and "method" in err
    code, _, err = compare(capsys, tmp_path / "missing")
    assert code == 2 and "no summary.csv" in err
    code, _, err = compare(capsys, tmp_path, "--rows", "method,domain")
    assert code == 2 and "'domain' is both a row key and the column key" in err


def test_side_by_side_pairs_runs_when_only_one_set_has_a_knob(tmp_path, capsys):
    """The reference set also holds an alpha run, so its unmix runs read norm.unbiased as ""
    (collect); the new set has no such column at all. The unmix runs still pair up."""
    write_run(tmp_path / "new", method="unmix", errors={"fog": 30.0})
    write_run(tmp_path / "ref", method="unmix", errors={"fog": 40.0})
    alpha = write_run(tmp_path / "ref", method="alpha", errors={"fog": 50.0})
    summary = pd.read_csv(alpha / "summary.csv", keep_default_na=False)
    summary.assign(norm_params="alpha=0.1;unbiased=False").to_csv(alpha / "summary.csv")
    args = [tmp_path / "new", "--against", tmp_path / "ref", "--format", "csv"]
    code, out, _ = compare(capsys, *args, "--where", "method=unmix")
    cells = pd.read_csv(io.StringIO(out))
    assert code == 0 and "norm.unbiased" not in cells
    assert cells.loc[cells["set"] == "Δ", "mean"].tolist() == pytest.approx([-10.0, -10.0])


def test_runs_of_different_models_are_never_averaged_as_seeds(tmp_path, capsys):
    # Same preset name (model=timm), same seed and stream: only model_params tell them apart.
    write_run(tmp_path, errors=dict.fromkeys(DOMAINS, 40.0), model_params="name=resnet18")
    write_run(tmp_path, errors=dict.fromkeys(DOMAINS, 20.0), model_params="name=vit_tiny")
    code, out, _ = compare(capsys, tmp_path, "--format", "markdown")
    assert code == 0 and "rows also split by model.name" in out
    cells = {r[-1] for r in markdown_rows(out)[2:]}
    assert cells == {"40.0", "**20.0**"}  # not 30.0
