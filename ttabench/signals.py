"""SIGTERM and SIGHUP end a run the way Ctrl-C does: recorded, then reported in one line.

By default SIGTERM (``kill``, a scheduler's time limit) kills Python without unwinding, so the
run could not mark itself and its ``summary.csv`` kept saying ``running``. Within
:func:`interruptible` both signals raise :class:`Interrupted` in the main thread instead, a
``KeyboardInterrupt``, so everything that handles Ctrl-C (the run's ``interrupted`` status,
Hydra, joblib) handles them too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

CAUGHT = (signal.SIGTERM, signal.SIGHUP)


class Interrupted(KeyboardInterrupt):
    """A termination signal turned into an exception (``signal_name``: e.g. ``SIGTERM``)."""

    def __init__(self, signum: int) -> None:
        self.signal_name = signal.Signals(signum).name
        self.signum = signum
        super().__init__(self.signal_name)


def signal_of(exc: BaseException) -> tuple[str, int]:
    """Name and number of the signal behind an interruption (Ctrl-C: SIGINT; SystemExit: 0)."""
    if isinstance(exc, Interrupted):
        return exc.signal_name, exc.signum
    if isinstance(exc, KeyboardInterrupt):
        return "SIGINT", int(signal.SIGINT)
    return type(exc).__name__, 0


@contextmanager
def interruptible() -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise :class:`Interrupted` (main thread only, and
    only where the signal has its default action: a handler someone installed is kept)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, _frame: object) -> None:
        for caught in previous:  # a second SIGTERM (schedulers send two) must not cut the
            signal.signal(caught, signal.SIG_IGN)  # run's own bookkeeping short
        raise Interrupted(signum)

    # Only where nobody else handles the signal: submitit, for one, catches SIGTERM on
    # pre-emption to requeue the job, which must keep working.
    free = [signum for signum in CAUGHT if signal.getsignal(signum) is signal.SIG_DFL]
    previous: dict[int, object] = {}
    for signum in free:
        previous[signum] = signal.signal(signum, handler)
    try:
        yield
    finally:
        for signum, before in previous.items():
            signal.signal(signum, before)
