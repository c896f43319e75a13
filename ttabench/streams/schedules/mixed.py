"""``mixed`` (SAR's ``mix_shifts``, Doebler's ``mixed_domains``): all domains pooled into one
stream; the label ordering is applied over the pool, so a batch can hold several domains and
any ordering composes with it (unlike TTAB, issue #8, and SAR)."""

from __future__ import annotations

from collections.abc import Sequence

from ...domains import Domain
from . import Visit


def visits(domains: Sequence[Domain]) -> list[Visit]:
    """A single visit pooling every configured domain, after one reset."""
    return [Visit(tuple(domains), True)]
