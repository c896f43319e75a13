"""SIGINT and SIGTERM end a run in one line with exit 128 + signal, and leave it recorded as
``interrupted (<signal>)`` with every logged row kept; rerunning resumes it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

from ttabench.methods.source import Source
from ttabench.run import run
from ttabench.signals import Interrupted, interruptible

from .conftest import compose_run


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_stream_is_recorded_and_reported_in_one_line(tmp_path, signum):
    name = signal.Signals(signum).name
    command = [sys.executable, "-m", "ttabench.cli", "run", "dataset.corruptions=[contrast]",
               "dataset.n_per_domain=8000", "stream.batch_size=16", "progress=false",
               "threads=1", f"hydra.run.dir={tmp_path}"]  # fmt: skip
    # A shell's background job inherits SIGINT ignored (and Python then keeps it so): restore
    # the default, as in a terminal.
    reset = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, preexec_fn=reset)
    online = tmp_path / "online.csv"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not online.exists() or len(online.read_text()) < 400):
        time.sleep(0.1)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum
    assert err.strip().splitlines()[-1].startswith(f"ttabench run: interrupted ({name}): ")
    assert "Traceback" not in err
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert (summary["status"] == "incomplete").all()
    assert summary["message"].iloc[-1] == f"interrupted ({name})"
    rows = pd.read_csv(online)
    assert len(rows) >= 2 and rows["step"].tolist() == list(range(len(rows)))


def test_handlers_are_restored_after_the_run():
    before = signal.getsignal(signal.SIGTERM)
    with interruptible(), pytest.raises(Interrupted, match="SIGTERM"):
        signal.raise_signal(signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before


class SendsSigterm(Source):
    """Source that signals its own process at batch ``at`` (as ``kill`` would)."""

    def __init__(self, model, context=None, at: int = 2):
        self.calls, self.at = 0, at
        super().__init__(model, context)

    def forward(self, x):
        if self.calls == self.at:
            signal.raise_signal(signal.SIGTERM)
        self.calls += 1
        return super().forward(x)


def test_run_records_sigterm_in_process(tmp_path):
    cfg = compose_run(f"method._target_={__name__}.SendsSigterm", "+method.at=2")
    with pytest.raises(Interrupted):
        run(cfg, tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["message"].iloc[-1] == "interrupted (SIGTERM)"
    assert summary.iloc[-1]["n"] == 2 * 64
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored after the run


def test_a_handler_installed_by_someone_else_is_kept():
    """submitit handles SIGTERM itself (pre-emption: requeue); a run must not take it over."""
    seen = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        with interruptible():
            signal.raise_signal(signal.SIGTERM)  # handled by theirs: no Interrupted
        assert seen == [signal.SIGTERM]
    finally:
        signal.signal(signal.SIGTERM, before)
