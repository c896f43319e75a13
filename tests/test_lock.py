"""One process per run directory: the loser of a race exits at once with one line and touches
nothing; a lock left by a killed process is taken over; many simultaneous pairs give exactly
one clean run each (scripts/stress_run_lock.py, 200 pairs in the closing note)."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ttabench.lock import LOCK_FILE, RunDirectoryBusy, RunLock
from ttabench.run import run

from .conftest import TINY, compose_run


def test_simultaneous_pairs_give_one_clean_run_each(tmp_path, monkeypatch):
    # importable by name: the pair processes unpickle its worker function
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "scripts"))
    counts = importlib.import_module("stress_run_lock").stress(6, tmp_path)
    assert counts["double runs or damage"] == 0 and counts["errors"] == 0
    assert counts["busy"] + counts["ran or skipped"] == 12 and counts["busy"] >= 1


def test_a_second_command_on_a_held_directory_exits_with_one_line(tmp_path):
    (tmp_path / "summary.csv").write_text("domain,status,message\nall,incomplete,theirs\n")
    with RunLock(tmp_path):
        result = subprocess.run(
            [sys.executable, "-m", "ttabench.cli", "run", *TINY, f"hydra.run.dir={tmp_path}"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("ttabench run: error: ") and "is being run by host=" in lines[-1]
    assert f"pid={os.getpid()}" in lines[-1] and "Traceback" not in result.stderr
    assert (tmp_path / "summary.csv").read_text().endswith("theirs\n")  # untouched
    assert not (tmp_path / "online.csv").exists()


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from ttabench.lock import RunLock; lock = RunLock(Path(sys.argv[1])).__enter__(); "
         "print('held', flush=True); time.sleep(60)", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(RunDirectoryBusy, match=f"pid={holder.pid}"):
        run(compose_run(), tmp_path)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    summary = run(compose_run(), tmp_path)
    assert (summary["status"] == "complete").all()
    assert f"pid={os.getpid()}" in (tmp_path / LOCK_FILE).read_text()


def test_the_lock_is_released_when_the_run_ends(tmp_path):
    run(compose_run(), tmp_path)
    start = time.monotonic()
    with RunLock(tmp_path):  # would raise if the finished run still held it
        pass
    assert time.monotonic() - start < 1
