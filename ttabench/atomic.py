"""Files written whole or not at all, and no leftovers from writers that were killed.

A writer saves into ``<name>.<pid>.tmp.npy`` (or ``.<name>.<pid>.tmp``) beside the target and
renames it over the target, so readers see the old file or the new one, never half. A writer
killed between the two leaves its temporary file behind (8 MB for an embedded domain); the next
write of the same target removes the temporary files of processes that no longer exist.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically (temporary file + rename)."""
    remove_stale_temps(path)
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files of ``path`` left by dead processes; returns them."""
    stem = re.escape(path.stem)
    pattern = re.compile(rf"^(?:{stem}|\.{re.escape(path.name)})\.(\d+)\.tmp(?:\.npy)?$")
    removed = []
    for candidate in path.parent.glob(f"*{path.stem}*.tmp*"):
        match = pattern.match(candidate.name)
        if match and not _alive(int(match[1])):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
