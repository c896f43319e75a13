"""Files written whole or not at all, and no leftovers from writers that were killed.

A writer saves into ``<stem>.<host>-<pid>.tmp.npy`` (or ``.<name>.<host>-<pid>.tmp``) beside
the target and renames it over the target, so readers see the old file or the new one, never
half. A writer killed between the two leaves its temporary file behind (8 MB for an embedded
domain); the next write of the same target on the same host removes the temporary files of this
host's processes that no longer exist (a writer on another host of a shared file system cannot
be checked, so its files are left alone).
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import numpy as np

#: This host, in temporary names (a pid means something on its own host only).
_TAG = re.sub(r"[^A-Za-z0-9_]", "_", socket.gethostname())


def save_npy(path: Path, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically (temporary file + rename)."""
    remove_stale_temps(path)
    tmp = path.with_name(f"{path.stem}.{_TAG}-{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def temp_name(path: Path) -> Path:
    """Where a writer of ``path`` (any format) puts its temporary file."""
    return path.with_name(f".{path.name}.{_TAG}-{os.getpid()}.tmp")


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files of ``path`` left by dead processes; returns them."""
    stem, name, tag = re.escape(path.stem), re.escape(path.name), re.escape(_TAG)
    pattern = re.compile(rf"^(?:{stem}|\.{name})\.{tag}-(\d+)\.tmp(?:\.npy)?$")
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
