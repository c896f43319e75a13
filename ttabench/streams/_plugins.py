"""Name -> function resolution for the pluggable parts of a stream.

Label orderings (``ttabench/streams/orderings/<name>.py``) and domain schedules
(``ttabench/streams/schedules/<name>.py``) are found by module name, so adding one is adding one
file: no registry to edit. Modules whose name starts with ``_`` are private helpers, not plugins.
Knobs are passed to a plugin only if its signature names them, so each plugin declares exactly
the knobs it reads (see :func:`accepted`).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable, Mapping
from typing import Any


def available(package: str) -> list[str]:
    """Sorted names of the public plugin modules of ``package``."""
    pkg = importlib.import_module(package)
    return sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_"))


def load(package: str, name: str, attribute: str, kind: str) -> Callable[..., Any]:
    """The function ``attribute`` of plugin ``package.name``.

    Raises:
        ValueError: ``name`` is not a plugin of ``package``; the message lists the valid names.
    """
    valid = available(package)
    if not isinstance(name, str) or name not in valid:
        raise ValueError(f"unknown {kind} {name!r}; valid names: {', '.join(valid)}")
    return getattr(importlib.import_module(f"{package}.{name}"), attribute)


def accepted(fn: Callable[..., Any], skip: int) -> set[str]:
    """Keyword parameters of ``fn`` after its first ``skip`` positional ones."""
    params = list(inspect.signature(fn).parameters.values())[skip:]
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name for p in params if p.kind in kinds}


def call(fn: Callable[..., Any], args: tuple[Any, ...], knobs: Mapping[str, Any]) -> Any:
    """Call ``fn(*args, **k)`` with ``k`` the subset of ``knobs`` its signature accepts."""
    names = accepted(fn, len(args))
    return fn(*args, **{k: v for k, v in knobs.items() if k in names})
