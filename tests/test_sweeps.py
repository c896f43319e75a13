"""Sweeps end to end, as a user types them (subprocesses: Hydra owns sys.argv): the basic,
joblib and submitit_local launchers, the end-of-sweep report, and resuming a sweep after one of
its runs was killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from ttabench.methods.source import Source
from ttabench.sweep import missing_launcher, sweep_status

from .test_cli import ttabench

ONE_BATCH = ["dataset.corruptions=[gaussian_noise]", "dataset.n_per_domain=64", "progress=false"]
DIRNAME = "dataset.corruptions=[gaussian_noise],dataset.n_per_domain=64,method={}"


class Sleepy(Source):
    """Source that takes 0.2 s per batch, so a test can kill a run mid-stream."""

    def forward(self, x):
        time.sleep(0.2)
        return super().forward(x)


def statuses(sweep: Path) -> dict[str, str]:
    table = sweep_status(sweep)
    return {Path(d).name: s for d, s in zip(table["run_dir"], table["status"], strict=True)}


def mtimes(sweep: Path) -> dict[str, int]:
    return {p.parent.name: p.stat().st_mtime_ns for p in sweep.rglob("summary.csv")}


def test_basic_launcher_runs_every_job_and_a_rerun_skips_the_complete_ones(tmp_path):
    sweep = tmp_path / "sweep"
    out = ttabench("run", "-m", "method=source,bn", f"hydra.sweep.dir={sweep}", *ONE_BATCH)
    assert out.returncode == 0, out.stderr
    assert f"sweep {sweep}: 2 runs: 2 complete" in out.stdout
    # One directory per job, named by its overrides (progress=false is left out of the name).
    assert statuses(sweep) == {
        DIRNAME.format("bn"): "complete",
        DIRNAME.format("source"): "complete",
    }
    assert (sweep / "multirun.yaml").exists()
    before = mtimes(sweep)
    # Same sweep, other excluded keys (device, threads): same directories, nothing rerun.
    again = ttabench(
        "run",
        "-m",
        "method=source,bn",
        f"hydra.sweep.dir={sweep}",
        "device=cpu",
        "threads=1",
        *ONE_BATCH,
    )
    assert again.returncode == 0, again.stderr
    assert mtimes(sweep) == before and again.stdout.count("is complete; skipping") == 2
    table = ttabench("compare", str(sweep), "--format", "markdown")
    assert "| bn " in table.stdout and "| source " in table.stdout


def test_joblib_runs_jobs_in_parallel_and_a_failed_run_does_not_stop_the_others(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    out = ttabench(
        "run",
        "-m",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "method=bn",
        "stream.batch_size=0,64",
        f"hydra.sweep.dir={sweep}",
        *ONE_BATCH,
    )
    assert out.returncode == 1, "a failed run makes the sweep exit 1"
    assert "Traceback" not in out.stderr and "deprecated" not in out.stderr
    ok, bad = (DIRNAME.format("bn") + f",stream.batch_size={bs}" for bs in (64, 0))
    assert statuses(sweep) == {ok: "complete", bad: "failed"}
    failed = pd.read_csv(sweep / bad / "summary.csv")
    assert "batch_size" in failed["message"].iloc[-1]
    assert f"failed: {sweep / bad}" in out.stderr
    # Two workers share the cores: each got cores // n_jobs torch threads (loky's limit).
    threads = max(1, (os.cpu_count() or 1) // 2)
    assert f"{threads} torch threads" in (sweep / ok / "cli.log").read_text()


def test_submitit_local_runs_every_job_through_the_cluster_code_path(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep = tmp_path / "sweep"
    out = ttabench(
        "run",
        "-m",
        "hydra/launcher=submitit_local",
        "threads=1",
        "method=source,bn",
        f"hydra.sweep.dir={sweep}",
        *ONE_BATCH,
    )
    assert out.returncode == 0, out.stderr
    assert statuses(sweep) == {
        DIRNAME.format("bn"): "complete",
        DIRNAME.format("source"): "complete",
    }
    logs = list((sweep / ".submitit").rglob("*_log.out"))
    assert len(logs) == 2 and all("results:" in log.read_text() for log in logs)
    assert "1 torch threads" in (sweep / DIRNAME.format("bn") / "cli.log").read_text()


def test_a_sweep_killed_mid_run_resumes_without_redoing_finished_runs(tmp_path):
    sweep = tmp_path / "sweep"
    args = [
        sys.executable,
        "-m",
        "ttabench.cli",
        "run",
        "-m",
        f"method._target_={__name__}.Sleepy",
        "seed=1,2",
        "stream.batch_size=16",
        "dataset.corruptions=[gaussian_noise,contrast]",
        "dataset.n_per_domain=128",
        "progress=false",
        f"hydra.sweep.dir={sweep}",
    ]
    first, second = (
        f"dataset.corruptions=[gaussian_noise,contrast],dataset.n_per_domain=128,"
        f"method._target_={__name__}.Sleepy,seed={s},stream.batch_size=16"
        for s in (1, 2)
    )
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    online = sweep / second / "online.csv"
    deadline = time.monotonic() + 120
    while not (online.exists() and len(online.read_text().splitlines()) > 11):  # 10 batches
        assert proc.poll() is None and time.monotonic() < deadline, "run ended before the kill"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    summary = pd.read_csv(sweep / second / "summary.csv")
    assert (summary["status"] == "incomplete").all()
    assert summary["message"].iloc[-1].startswith("running: host=")
    # The partial summary was refreshed at the domain boundary: the first domain is in it.
    assert summary.set_index("domain").loc["gaussian_noise", "n"] == 128
    assert statuses(sweep) == {first: "complete", second: "incomplete"}
    table = ttabench("compare", str(sweep))
    assert f"not tabulated (incomplete): {sweep / second}" in table.stdout
    kept = len(pd.read_csv(online))
    done = mtimes(sweep)[first]

    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert mtimes(sweep)[first] == done, "the complete run was not redone"
    assert statuses(sweep) == {first: "complete", second: "complete"}
    assert len(pd.read_csv(sweep / second / "online.attempt1.csv")) == kept
    assert len(pd.read_csv(online)) == 2 * 128 // 16


def test_a_launcher_without_its_plugin_is_a_clear_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(  # as if `pip install 'ttabench[slurm]'` had not been run
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.endswith("submitit_launcher") else real(name, *a),
    )
    problem = missing_launcher(["method=bn", "hydra/launcher=submitit_slurm"])
    assert problem is not None and "pip install 'ttabench[slurm]'" in problem
    assert missing_launcher(["hydra/launcher=basic", "method=bn"]) is None


def test_a_member_failing_at_set_up_never_stops_the_sweep_or_its_report(tmp_path):
    """timm without a model name fails in OmegaConf, not with a ValueError: it used to print a
    traceback and abort the end-of-sweep report."""
    sweep = tmp_path / "sweep"
    out = ttabench("run", "-m", "model=timm,embedded", f"hydra.sweep.dir={sweep}", *ONE_BATCH)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "ttabench run: error: Missing mandatory value: model.name" in out.stderr
    assert "2 runs: 1 complete, 1 failed" in out.stdout
    failed = next(p for p in sweep.iterdir() if "model=timm" in p.name)
    message = pd.read_csv(failed / "summary.csv")["message"].iloc[-1]
    assert message == "MissingMandatoryValue: Missing mandatory value: model.name"
    assert "\n" not in message
