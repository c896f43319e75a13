"""Hyperparameter sensitivity and selection (``compare --sensitivity``, ``plot --kind
sensitivity``, the ``+sweep=sensitivity_*`` presets) on synthetic sweeps with known answers."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from PIL import Image

from ttabench.compare import main as compare
from ttabench.config import config_dir
from ttabench.plot import main as plot
from ttabench.results import collect
from ttabench.sensitivity import default_value, sensitivity_table

from .run_fixtures import write_run

LRS = ("0.0001", "0.001", "0.01")
# test error by stream and lr: the default (1e-3) is best on iid, 1e-4 on dirichlet
TEST = {"iid": (20.0, 15.0, 30.0), "dirichlet": (40.0, 50.0, 60.0)}
HELD = {"iid": (25.0, 18.0, 35.0), "dirichlet": (45.0, 44.0, 70.0)}  # picks 1e-3 on both
# label-free criteria: entropy lowest at 1e-2 (a collapsed, confident model), SND highest at 1e-3
ENTROPY, SND = (0.5, 0.3, 0.1), (1.0, 2.0, 1.5)


def sweep(root, errors, criteria: bool = True):
    for stream, values in errors.items():
        for i, lr in enumerate(LRS):
            for seed in (1, 2):
                extra = {"entropy": ENTROPY[i], "snd": SND[i]} if criteria else {}
                error = values[i] + seed - 1.5  # two seeds, 1 point apart
                write_run(root, method="tent", norm="bn", stream=stream, seed=seed,
                          errors={"fog": error}, method_params=f"optim.lr={lr};steps=1",
                          extra=extra)  # fmt: skip
    return root


def row(table, stream: str):
    return table[table["stream"] == stream].iloc[0]


def test_default_comes_from_the_method_config_for_the_dataset():
    assert (
        float(default_value("method.optim.lr", {"method": "tent", "dataset": "embedded"})) == 1e-3
    )
    imagenet = default_value("method.optim.lr", {"method": "tent", "dataset": "imagenetc"})
    assert float(imagenet) == 2.5e-4  # the per-dataset table applied
    assert default_value("method.no_such_knob", {"method": "tent"}) is None


def test_table_shows_default_best_optimism_and_each_selection(tmp_path):
    runs = collect([sweep(tmp_path / "test", TEST)])
    held = collect([sweep(tmp_path / "held", HELD, criteria=False)])
    table, notes = sensitivity_table(runs, "optim.lr", heldout=held)
    iid, dirichlet = row(table, "iid"), row(table, "dirichlet")
    assert iid["lr=0.0001"] == "20.0 ± 0.7" and dirichlet["lr=0.01"] == "60.0 ± 0.7"
    assert iid["default"] == "0.001: 15.0" and iid["best in hindsight"] == "0.001: 15.0"
    assert (
        dirichlet["default"] == "0.001: 50.0" and dirichlet["best in hindsight"] == "0.0001: 40.0"
    )
    assert iid["optimism"] == "0.0" and dirichlet["optimism"] == "10.0"
    assert (
        iid["held-out"] == "0.001: 15.0 (+0.0)" and dirichlet["held-out"] == "0.001: 50.0 (+10.0)"
    )
    assert iid["entropy"] == "0.01: 30.0 (+15.0)"  # lowest entropy: the collapsed model
    assert iid["snd"] == "0.001: 15.0 (+0.0)"  # highest SND
    assert any("chosen with the test labels" in n for n in notes)


def test_compare_cli_prints_the_sensitivity_table(tmp_path, capsys):
    root = sweep(tmp_path / "test", TEST)
    assert compare([str(root), "--sensitivity", "optim.lr", "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    assert "| tent     | dirichlet" in out and "0.0001: 40.0" in out and "- default:" in out
    assert compare([str(root), "--sensitivity", "optim.lr", "--format", "csv"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("method,stream,lr=0.0001")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--sensitivity", "no_such_knob"], "unknown key 'no_such_knob'; valid:"),
        (["--heldout", "x"], "--heldout goes with --sensitivity KEY"),
        (["--sensitivity", "optim.lr", "--parts", "2"], "--sensitivity goes without"),
        (["--sensitivity", "optim.lr", "--columns", "stream"], "--sensitivity goes without"),
        (["--sensitivity", "error"], "--sensitivity error: not a knob of any config group"),
        (["--sensitivity", "seed"], "not a knob of any config group; valid: method.optim.lr"),
        (["--sensitivity", "steps"], "method.steps has one value among the complete runs"),
    ],
)
def test_compare_sensitivity_bad_input_is_one_line(tmp_path, capsys, argv, message):
    root = sweep(tmp_path / "test", TEST)
    assert compare([str(root), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_plot_draws_error_against_the_swept_value(tmp_path, capsys):
    root = sweep(tmp_path / "test", TEST)
    out = tmp_path / "figs"
    argv = [str(root), "--kind", "sensitivity", "--x", "optim.lr", "--lines", "stream"]
    assert plot([*argv, "--out", str(out)]) == 0
    (figure,) = out.glob("sensitivity_lr*.png")
    assert Image.open(figure).size[0] > 300
    assert plot([str(root), "--kind", "sensitivity", "--out", str(out)]) == 2
    assert "--kind sensitivity needs --x KEY" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("preset", "key"),
    [
        ("sensitivity_lr", "method.optim.lr"),
        ("sensitivity_margin", "method.e_margin"),
        ("sensitivity_components", "norm.num_components"),
    ],
)
def test_sweep_presets_sweep_their_knob_over_two_streams_and_three_seeds(preset, key):
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", [f"+sweep={preset}"], return_hydra_config=True)
    params = cfg.hydra.sweeper.params
    assert len(str(params[key]).split(",")) >= 5
    assert params["stream"] == "iid,dirichlet" and params["seed"] == "2020,2021,2022"


def test_text_valued_and_missing_values_sort_after_numbers(tmp_path):
    root = sweep(tmp_path / "test", TEST)
    write_run(root, method="tent", norm="bn", stream="iid", seed=1, errors={"fog": 99.0},
              method_params="optim.lr=None;steps=1")  # fmt: skip
    table, _ = sensitivity_table(collect([root]), "optim.lr")
    assert [c for c in table.columns if c.startswith("lr=")][-1] == "lr=None"


def test_heldout_runs_of_other_configurations_are_noted_not_matched(tmp_path):
    runs = collect([sweep(tmp_path / "test", TEST)])
    held_root = sweep(tmp_path / "held", HELD, criteria=False)
    write_run(held_root, method="tent", norm="bn", stream="iid", seed=1, errors={"fog": 1.0},
              method_params="optim.lr=0.001;steps=2")  # fmt: skip
    table, notes = sensitivity_table(runs, "optim.lr", heldout=collect([held_root]))
    assert (table["held-out"] == "").all()  # "tent (steps=1)" there, "tent" here: no match
    assert "held-out: no held-out runs for 2 row(s)" in notes


def test_plot_says_when_no_key_has_two_numeric_values(tmp_path, capsys):
    root = sweep(tmp_path / "test", {"iid": TEST["iid"]})
    assert plot([str(root), "--kind", "sensitivity", "--x", "steps", "--out", str(tmp_path)]) == 0
    assert "sensitivity: skipped: no configuration was run at two" in capsys.readouterr().err


def test_defaults_are_found_for_rows_labelled_as_using_labels():
    import pandas as pd

    from ttabench.sensitivity import fixed_choices

    labelled = pd.DataFrame({"method": ["tent"], "protocol": ["oracle_selection [uses labels]"]})
    choices = fixed_choices(labelled)
    assert choices == {"method": "tent", "protocol": "oracle_selection"}
    assert float(default_value("method.optim.lr", choices)) == 1e-3
