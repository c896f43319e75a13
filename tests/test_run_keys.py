"""Every run key is checked before a run touches anything: a wrong kind or range is one error
naming the key, the value and what it takes, recorded as ``failed`` in the run directory (but
never over complete results), and at the command line one line with exit 2, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from ttabench.run import run

from .conftest import TINY, compose_run

BAD = [
    ("seed=abc", "seed must be an integer, not 'abc'"),
    ("seed=true", "seed must be an integer, not True"),
    ("stream_seed=1.5", "stream_seed must be an integer, not 1.5"),
    ("threads=0", "threads must be an integer >= 1 or null, not 0"),
    ("threads=-1", "threads must be an integer >= 1 or null, not -1"),
    ("threads=two", "threads must be an integer >= 1 or null, not 'two'"),
    ("device=bogus", "device must be auto, cpu, cuda or cuda:N (a torch device), not 'bogus'"),
    ("resume=maybe", "resume must be true or false, not 'maybe'"),
    ("save_predictions=maybe", "save_predictions must be true or false, not 'maybe'"),
    ("progress=2", "progress must be true or false, not 2"),
    ("prefetch=-1", "prefetch must be an integer >= 0 or null, not -1"),
    ("amp=1", "amp must be true or false, not 1"),
    ("dataset.corruptions=[contrast,fog,contrast]", "lists contrast more than once"),
]  # fmt: skip


@pytest.mark.parametrize(("override", "message"), BAD)
def test_a_bad_run_key_is_named_and_recorded(tmp_path, override, message):
    with pytest.raises(
        Exception, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
    ):
        run(compose_run(override), tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["status"].iloc[-1] == "failed" and message in summary["message"].iloc[-1]
    assert not (tmp_path / "online.csv").exists()


def test_cuda_that_is_not_there_is_named():
    import torch

    from ttabench.run_keys import resolve_device

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(ValueError, match=f"device=cuda:{count} but this machine has {count} CUDA"):
        resolve_device(f"cuda:{count}")


def test_a_bad_key_never_overwrites_complete_results(tmp_path):
    run(compose_run(), tmp_path)
    with pytest.raises(ValueError, match="threads must be"):
        run(compose_run("threads=0"), tmp_path)
    assert (pd.read_csv(tmp_path / "summary.csv")["status"] == "complete").all()


@pytest.mark.parametrize("override", ["device=bogus", "threads=-1"])
def test_the_command_line_gives_one_line_and_exit_2(tmp_path, override):
    result = subprocess.run(
        [sys.executable, "-m", "ttabench.cli", "run", *TINY, override, f"hydra.run.dir={tmp_path}"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"ttabench run: error: {override.split('=')[0]} must be")
    assert pd.read_csv(tmp_path / "summary.csv")["status"].iloc[-1] == "failed"
