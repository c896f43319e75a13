"""The `ttabench` command as a user types it (subprocesses: Hydra must own sys.argv)."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from ttabench.config import list_groups

from .conftest import TINY


def ttabench(*args: str, env_cache=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ttabench.cli", *args], capture_output=True, text=True, timeout=300
    )


def test_help_lists_the_subcommands():
    out = ttabench("--help")
    assert out.returncode == 0
    for command in ("run", "compare", "list", "pretrain"):
        assert f"  {command}" in out.stdout


def test_run_help_shows_every_group_and_its_options():
    out = ttabench("run", "--help")
    assert out.returncode == 0
    for group, options in list_groups().items():
        assert f"{group}: {', '.join(options)}" in out.stdout


def test_unknown_group_option_lists_the_valid_ones_without_traceback():
    out = ttabench("run", "method=nope")
    assert out.returncode == 2  # bad input, like every other configuration error
    assert "Available options in 'method'" in out.stderr and "bn" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout


def test_unknown_key_is_a_hydra_error_without_traceback():
    out = ttabench("run", "stream.no_such_knob=1")
    assert out.returncode == 2
    assert "no_such_knob" in out.stderr and "Traceback" not in out.stderr


def test_bad_knob_value_is_a_clear_error_without_traceback():
    out = ttabench("run", "stream.batch_size=0", *TINY)
    assert out.returncode == 2
    assert "batch_size" in out.stderr and "Traceback" not in out.stderr


def test_unknown_subcommand_lists_the_valid_ones():
    out = ttabench("frobnicate")
    assert out.returncode == 2 and "run, compare, list, pretrain" in out.stderr


def test_end_to_end_run_and_compare(tmp_path):
    out = ttabench("run", "method=bn", f"hydra.run.dir={tmp_path}/run", *TINY)
    assert out.returncode == 0, out.stderr
    assert "gaussian_noise" in out.stdout and "complete" in out.stdout
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert summary["method"].iloc[0] == "bn" and summary["status"].iloc[-1] == "complete"
    assert (tmp_path / "run" / ".hydra" / "config.yaml").exists()
    table = ttabench("compare", str(tmp_path), "--format", "markdown")
    assert table.returncode == 0 and "| bn" in table.stdout
