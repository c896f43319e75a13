"""Temporary files of killed writers are removed by the next write of the same file (an
embedded cache domain: 8 MB each), while those of live writers are left alone."""

from __future__ import annotations

import subprocess

import numpy as np
import pandas as pd

from ttabench.atomic import _TAG, remove_stale_temps, save_npy
from ttabench.results import write_csv_atomic


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_the_next_write_removes_a_dead_writers_temp_and_keeps_a_live_ones(tmp_path):
    target = tmp_path / "fog-5-images-abc.npy"
    dead = tmp_path / f"fog-5-images-abc.{_TAG}-{dead_pid()}.tmp.npy"
    dead.write_bytes(b"x" * 1000)
    live_writer = subprocess.Popen(["sleep", "30"])
    try:
        live = tmp_path / f"fog-5-images-abc.{_TAG}-{live_writer.pid}.tmp.npy"
        remote = tmp_path / f"fog-5-images-abc.otherhost-{dead_pid()}.tmp.npy"  # unknowable
        remote.write_bytes(b"r")
        live.write_bytes(b"y")
        other = tmp_path / f"contrast-5-images-abc.{_TAG}-{dead_pid()}.tmp.npy"  # not its target
        other.write_bytes(b"z")
        save_npy(target, np.arange(4))
        assert np.array_equal(np.load(target), np.arange(4))
        assert not dead.exists() and live.exists() and other.exists() and remote.exists()
    finally:
        live_writer.kill()
        live_writer.wait()


def test_summaries_clean_up_after_killed_writers_too(tmp_path):
    target = tmp_path / "summary.csv"
    dead = tmp_path / f".summary.csv.{_TAG}-{dead_pid()}.tmp"
    dead.write_text("half")
    write_csv_atomic(pd.DataFrame({"a": [1]}), target)
    assert not dead.exists() and pd.read_csv(target)["a"].tolist() == [1]
    assert remove_stale_temps(target) == []
