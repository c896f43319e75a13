"""``single`` (Doebler's ``reset_each_shift``): each domain is its own stream, the method is
reset before every domain (the Tent/NOTE/SAR per-corruption protocol)."""

from __future__ import annotations

from collections.abc import Sequence

from ...domains import Domain
from . import Visit


def visits(domains: Sequence[Domain]) -> list[Visit]:
    """One visit per domain, each preceded by a reset."""
    return [Visit((d,), True) for d in domains]
