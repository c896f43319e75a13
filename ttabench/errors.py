"""Errors in one line: what every command prints and every failed summary records.

Hydra wraps a target's own error ("Error in call to target ...: ValueError(...)") and OmegaConf
appends ``full_key:`` / ``object_type=`` lines; users need the mistake itself, on one line, with
the key that holds it.
"""

from __future__ import annotations

_NOISE = ("full_key:", "object_type=", "reference_type=", "Set the environment variable")


def root_error(exc: BaseException) -> BaseException:
    """The user's error inside Hydra's wrapping (the target's ValueError, ...), else ``exc``."""
    cause = exc.__cause__
    if cause is not None and isinstance(cause, ValueError | FileNotFoundError | TypeError):
        return cause
    return exc


def one_line(exc: BaseException) -> str:
    """``exc``'s message on one line, led by the config key where one is known."""
    key = getattr(exc, "full_key", "") or getattr(exc.__cause__, "full_key", "") or ""
    root = root_error(exc)
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    text = "; ".join(line for line in lines if not line.startswith(_NOISE)) or type(root).__name__
    return f"{key}: {text}" if key and key not in text else text
