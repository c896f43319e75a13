"""Resume: decide whether a run directory is done, being run, or to be (re)done.

A sweep is long and may be killed at any moment (Ctrl-C, SIGKILL, a pre-empted SLURM job), then
re-run with the same ``hydra.sweep.dir``. The state of a run lives in its ``summary.csv``, which
is written atomically: when a run starts, a one-row ``summary.csv`` with ``status=incomplete``
and ``message=running: host=H pid=P since=T`` marks it; the run overwrites it with partial
results at domain boundaries and with ``complete`` / ``failed`` / ``incomplete`` (interrupted)
at the end. So a directory is in exactly one of these states:

- ``complete``: every row says ``complete``: skipped by ``resume=true``.
- ``running``: the marker names a live process on this host other than this one: skipped, so
  two processes never write into one directory (a process on another host cannot be checked:
  do not rerun a sweep while its cluster jobs still run).
- ``redo``: no summary, ``failed``, ``incomplete`` or a dead marker: run again, keeping the rows
  of the earlier attempt aside as ``online.attemptN.csv``.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
from enum import Enum
from pathlib import Path

import pandas as pd

SUMMARY = "summary.csv"
ONLINE = "online.csv"
_MARKER = re.compile(r"^running: host=(?P<host>\S+) pid=(?P<pid>\d+)")


class RunState(Enum):
    COMPLETE = "complete"
    RUNNING = "running"
    REDO = "redo"


def running_message() -> str:
    """The ``message`` of a run in progress: enough to tell whether its process still lives."""
    since = dt.datetime.now().isoformat(timespec="seconds")
    return f"running: host={socket.gethostname()} pid={os.getpid()} since={since}"


def run_state(run_dir: Path) -> RunState:
    """What ``resume=true`` should do with ``run_dir`` (see the module docstring)."""
    path = run_dir / SUMMARY
    if not path.exists():
        return RunState.REDO
    summary = pd.read_csv(path, usecols=["status", "message"], keep_default_na=False)
    if len(summary) and (summary["status"] == "complete").all():
        return RunState.COMPLETE
    if len(summary) and _held_by_live_process(str(summary["message"].iloc[-1])):
        return RunState.RUNNING
    return RunState.REDO


def keep_partial(run_dir: Path) -> Path | None:
    """Move the rows of an earlier attempt aside (``online.attemptN.csv``), never overwrite them."""
    online = run_dir / ONLINE
    if not online.exists():
        return None
    attempt = 1 + len(list(run_dir.glob("online.attempt*.csv")))
    kept = run_dir / f"online.attempt{attempt}.csv"
    online.rename(kept)
    return kept


def _held_by_live_process(message: str) -> bool:
    match = _MARKER.match(message)
    if match is None or match["host"] != socket.gethostname():
        return False
    pid = int(match["pid"])
    if pid == os.getpid():  # this process wrote it (e.g. an earlier run() call in a test)
        return False
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet still answers signal 0 (Linux only)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"
