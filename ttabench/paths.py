"""Output folders made with an error that names the key and the reason, never a traceback.

``--out``, ``hydra.run.dir`` and ``hydra.sweep.dir`` may point under a regular file, into a
folder that cannot be written, or onto an existing file; ``mkdir`` then raises
``NotADirectoryError``/``FileExistsError``/``PermissionError`` deep inside a command.
:func:`make_dir` turns each into one ValueError that says which option and why.
"""

from __future__ import annotations

import os
from pathlib import Path


def make_dir(path: str | os.PathLike, what: str) -> Path:
    """Create folder ``path`` (and its parents) or raise a ValueError naming ``what``."""
    path = Path(path)
    problem = dir_problem(path)
    if problem:
        raise ValueError(f"{what}={path}: {problem}")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{what}={path}: cannot create it ({exc.strerror})") from None
    return path


def dir_problem(path: str | os.PathLike) -> str | None:
    """Why folder ``path`` could not be created or written (None: it can), without creating
    anything: the nearest existing ancestor must be a writable folder."""
    path = Path(path).absolute()
    if path.exists() and not path.is_dir():
        return f"{path} is a file, not a folder"
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        return f"{existing} is a file, not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    return None
