"""One process per run directory: an OS-level lock held for the life of a run.

Two commands on the same ``hydra.run.dir`` (or two sweeps over one ``hydra.sweep.dir``) used to
race between checking the ``running`` marker of ``summary.csv`` and writing their own, so both
could run and interleave rows in ``online.csv``. The run now takes ``fcntl.flock`` on
``<run_dir>/.ttabench.lock`` before it reads or writes anything there; a second process fails at
once with :class:`RunDirectoryBusy`, naming the holder (host, pid, start). The kernel drops the
lock when its process dies, however it dies, so a lock left by a killed run is simply taken
over. The file itself stays (deleting a lock file races with a process about to lock it). On
network file systems without working ``flock`` the marker check of :mod:`ttabench.resume`
remains the guard.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import socket
from pathlib import Path
from typing import IO

LOCK_FILE = ".ttabench.lock"


class RunDirectoryBusy(ValueError):
    """Another live process holds the run directory."""


class RunLock:
    """``with RunLock(run_dir):`` holds the directory's lock or raises :class:`RunDirectoryBusy`."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self._file: IO[str] | None = None

    def __enter__(self) -> RunLock:
        try:  # O_NOFOLLOW: a planted symlink must not make the run truncate another file
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
            file = os.fdopen(fd, "r+")
        except OSError as exc:
            raise OSError(f"cannot create the lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            file.seek(0)
            holder = file.read().strip() or "another process"
            file.close()
            raise RunDirectoryBusy(
                f"{self.path.parent} is being run by {holder}; wait for it to end or choose "
                "another hydra.run.dir / hydra.sweep.dir"
            ) from None
        file.seek(0)
        file.truncate()
        since = dt.datetime.now().isoformat(timespec="seconds")
        file.write(f"host={socket.gethostname()} pid={os.getpid()} since={since}\n")
        file.flush()
        self._file = file
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            self._file.close()  # closing the descriptor releases the lock
            self._file = None
