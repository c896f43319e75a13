"""``continual`` (CoTTA, Wang et al., CVPR 2022): the domains one after another in the configured
order, the method reset only once, before the first; shifts are not announced."""

from __future__ import annotations

from collections.abc import Sequence

from ...domains import Domain
from . import Visit


def visits(domains: Sequence[Domain]) -> list[Visit]:
    """One visit per domain in configured order; a reset before the first only."""
    return [Visit((d,), i == 0) for i, d in enumerate(domains)]
