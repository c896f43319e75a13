"""Output folders that cannot be made (under a regular file, onto a file) and input tables that
cannot be read end every command in one line that names the option and the reason, exit 2."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ttabench import cli
from ttabench.run import run

from .conftest import TINY, compose_run
from .run_fixtures import write_run


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a_file"
    path.write_text("not a folder\n")
    return path


def one_error_line(err: str, command: str) -> str:
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith(f"ttabench {command}: error: ")
    return line


@pytest.mark.parametrize("key", ["hydra.run.dir", "hydra.sweep.dir"])
def test_run_output_under_a_file(a_file, key):
    argv = ["run", *TINY, f"{key}={a_file}/run"] + (["-m"] if "sweep" in key else [])
    result = subprocess.run([sys.executable, "-m", "ttabench.cli", *argv], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2
    assert f"{key}={a_file}/run: {a_file} is a file, not a folder" in one_error_line(
        result.stderr, "run"
    )


def test_run_function_names_the_run_directory(a_file):
    with pytest.raises(ValueError, match=f"run directory={a_file}/x: {a_file} is a file"):
        run(compose_run(), a_file / "x")


def test_plot_out_onto_a_file(tmp_path, a_file, capsys):
    write_run(tmp_path / "runs", online=True)
    assert cli.main(["plot", str(tmp_path / "runs"), "--out", str(a_file)]) == 2
    line = one_error_line(capsys.readouterr().err, "plot")
    assert f"--out={a_file}: {a_file} is a file, not a folder" in line


def test_make_c_out_under_a_file(tmp_path, a_file, capsys):
    argv = ["make-c", "cifar10c", "--root", str(tmp_path), "--out", str(a_file / "x")]
    assert cli.main(argv) == 2
    assert f"--out: {a_file} is a file, not a folder" in one_error_line(
        capsys.readouterr().err, "make-c"
    )


def test_compare_names_an_unreadable_table(tmp_path, capsys):
    table = tmp_path / "summaries.csv"
    table.write_text("")
    assert cli.main(["compare", str(table)]) == 2
    assert f"{table} is not a table of summary rows" in one_error_line(
        capsys.readouterr().err, "compare"
    )
