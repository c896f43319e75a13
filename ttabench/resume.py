"""Resume: decide whether a run directory is done, being run, or to be (re)done.

A sweep is long and may be killed at any moment (Ctrl-C, SIGKILL, a pre-empted SLURM job), then
re-run with the same ``hydra.sweep.dir``. The state of a run lives in its ``summary.csv``, which
is written atomically: when a run starts, a one-row ``summary.csv`` with ``status=incomplete``
and ``message=running: host=H pid=P start=S since=T`` marks it (``S``: the process's start time
in clock ticks after boot, so a later process that reuses the pid is not mistaken for it); the
run overwrites it with partial results at domain boundaries and with ``complete`` / ``failed`` /
``incomplete`` (interrupted) at the end. So a directory is in exactly one of these states:

- ``complete``: every row says ``complete``: skipped by ``resume=true``.
- ``running``: the marker names a live process on this host other than this one: skipped. Two
  processes on one host never get this far together: the run directory's lock
  (:mod:`ttabench.lock`) admits one; the marker is the guard where ``flock`` does not reach (a
  process on another host of a network file system cannot be checked: do not rerun a sweep
  while its cluster jobs still run).
- ``redo``: no summary, ``failed``, ``incomplete`` or a dead marker: run again, keeping the rows
  of the earlier attempt aside as ``online.attemptN.csv`` (and its ``error.txt`` /
  ``predictions.csv`` as ``*.attemptN.*``, so a complete directory holds no stale file).
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
_MARKER = re.compile(r"^running: host=(?P<host>\S+) pid=(?P<pid>\d+)(?: start=(?P<start>\d+))?")
#: Files of an attempt that a new attempt moves aside (``online.csv`` -> ``online.attemptN.csv``).
ATTEMPT_FILES = (ONLINE, "error.txt", "predictions.csv")


class RunState(Enum):
    COMPLETE = "complete"
    RUNNING = "running"
    REDO = "redo"


def running_message() -> str:
    """The ``message`` of a run in progress: enough to tell whether its process still lives."""
    since = dt.datetime.now().isoformat(timespec="seconds")
    pid = os.getpid()
    start = _start_time(pid)
    started = "" if start is None else f" start={start}"
    return f"running: host={socket.gethostname()} pid={pid}{started} since={since}"


def run_state(run_dir: Path) -> RunState:
    """What ``resume=true`` should do with ``run_dir`` (see the module docstring)."""
    path = run_dir / SUMMARY
    if not path.exists():
        return RunState.REDO
    try:
        summary = pd.read_csv(path, usecols=["status", "message"], keep_default_na=False)
    except (ValueError, OSError, UnicodeDecodeError):  # empty, truncated or foreign: redo it
        return RunState.REDO
    if len(summary) and (summary["status"] == "complete").all():
        return RunState.COMPLETE
    if len(summary) and _held_by_live_process(str(summary["message"].iloc[-1])):
        return RunState.RUNNING
    return RunState.REDO


def keep_partial(run_dir: Path) -> Path | None:
    """Move the files of an earlier attempt aside (``online.csv`` -> ``online.attemptN.csv``,
    likewise ``error.txt`` and ``predictions.csv``), N one above any attempt kept so far, so
    nothing is ever overwritten. Returns where ``online.csv`` went (None: there was none)."""
    present = [name for name in ATTEMPT_FILES if (run_dir / name).exists()]
    if not present:
        return None
    kept = [re.search(r"\.attempt(\d+)\.", p.name) for p in run_dir.glob("*.attempt*.*")]
    attempt = 1 + max((int(m[1]) for m in kept if m), default=0)
    moved = {}
    for name in present:
        stem, dot, suffix = name.partition(".")
        moved[name] = run_dir / f"{stem}.attempt{attempt}{dot}{suffix}"
        (run_dir / name).rename(moved[name])
    return moved.get(ONLINE)


def _held_by_live_process(message: str) -> bool:
    match = _MARKER.match(message)
    if match is None or match["host"] != socket.gethostname():
        return False
    pid = int(match["pid"])
    if pid == os.getpid():  # this process wrote it (e.g. an earlier run() call in a test)
        return False
    if match["start"] is not None and _start_time(pid) != int(match["start"]):
        return False  # that process is gone; the pid now belongs to another one (or to none)
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return not _is_zombie(pid)


def _start_time(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks after boot (``/proc/<pid>/stat`` field 22;
    Linux only, None elsewhere or when there is no such process)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[-1].split()[19])


def _is_zombie(pid: int) -> bool:
    """A killed process its parent has not reaped yet still answers signal 0 (Linux only)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"
