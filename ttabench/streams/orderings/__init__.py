"""Label orderings: how the samples of one visit (a domain, or a pool of domains) are ordered.

Each public module ``<name>.py`` here is one ordering and exposes::

    order(labels: np.ndarray, rng: np.random.Generator, **knobs) -> np.ndarray

returning positions into ``labels``: a permutation for permutation orderings, or positions drawn
with replacement for orderings that also accept a ``length`` parameter (the stream length they
must produce, e.g. ``imbalanced``). ``labels`` are the int64 labels of the pool in dataset order;
``rng`` is the visit's own generator (never the global one). Knob parameters are filled from the
stream's knobs of the same name.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .._plugins import accepted, available, load

OrderFn = Callable[..., np.ndarray]


def names() -> list[str]:
    """Names of all available label orderings."""
    return available(__name__)


def get(name: str) -> OrderFn:
    """The ``order`` function of ordering ``name`` (ValueError listing valid names if unknown)."""
    return load(__name__, name, "order", "label ordering")


def draws_with_replacement(fn: OrderFn) -> bool:
    """Whether the ordering draws positions with replacement (it accepts ``length``)."""
    return "length" in accepted(fn, 2)
