"""``gradual`` (CoTTA's gradual setting, Doebler's ``gradual``): each corruption is visited at
severities 1, 2, 3, 4, 5, 4, 3, 2, 1 before the next one, the method reset only once.

As in the Doebler benchmark, the 1..5..1 ramp is used when a single severity is configured;
with several configured severities each corruption runs through those, in configured order.
The ordering of a repeated (corruption, severity) visit differs between its occurrences.
"""

from __future__ import annotations

from collections.abc import Sequence

from ...domains import Domain
from . import Visit

RAMP = (1, 2, 3, 4, 5, 4, 3, 2, 1)


def visits(domains: Sequence[Domain]) -> list[Visit]:
    """Each configured corruption at every severity of the ramp; a reset before the first."""
    corruptions = list(dict.fromkeys(d.corruption for d in domains))
    configured = list(dict.fromkeys(d.severity for d in domains))
    severities = RAMP if len(configured) == 1 else configured
    steps = [Domain(c, s) for c in corruptions for s in severities]
    return [Visit((d,), i == 0) for i, d in enumerate(steps)]
