"""Domain schedules: which domains a stream visits, in what order, and when the method resets.

Each public module ``<name>.py`` here is one schedule and exposes::

    visits(domains: Sequence[Domain], **knobs) -> list[Visit]

A :class:`Visit` is a tuple of domains pooled into one sub-stream (one domain except for
``mixed``) plus whether the method is reset before it. The label ordering is applied per visit,
and batches never span two visits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ...domains import Domain
from .._plugins import available, load


class Visit(NamedTuple):
    """Domains pooled into one sub-stream, and whether the method is reset before it."""

    domains: tuple[Domain, ...]
    reset: bool


VisitsFn = Callable[..., list[Visit]]


def names() -> list[str]:
    """Names of all available domain schedules."""
    return available(__name__)


def get(name: str) -> VisitsFn:
    """The ``visits`` function of schedule ``name`` (ValueError listing valid names if unknown)."""
    return load(__name__, name, "visits", "domain schedule")
