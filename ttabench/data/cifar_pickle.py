"""The CIFAR python batches (``cifar-10-batches-py/*_batch``, ``cifar-100-python/{train,test}``)
read without letting the file run code.

Krizhevsky's batches are pickles, and ``pickle.load`` executes whatever callable a crafted file
names (``os.system`` included). A batch only ever holds dicts, lists, strings, bytes, numbers
and NumPy arrays, so the unpickler here resolves exactly the globals those need: NumPy's array
reconstruction (``numpy.core.multiarray._reconstruct``, ``numeric._frombuffer`` for
protocol 5, under NumPy 1 or 2 names), ``numpy.ndarray``, ``numpy.dtype`` and ``_codecs.encode``
(how protocol 2 writes bytes).
Anything else is refused with an error naming the file and the global, before it is called; and
the loaded object must be plain data (numeric arrays without fields or objects), checked on
metadata only, since a crafted dtype state can otherwise make an array read bytes as pointers.
"""

from __future__ import annotations

import codecs
import pickle
from pathlib import Path
from typing import Any

import numpy as np

try:
    from numpy._core import multiarray, numeric
except ImportError:  # numpy < 2
    from numpy.core import multiarray, numeric  # type: ignore[no-redef]

_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): codecs.encode,
}
for _module in ("numpy.core.multiarray", "numpy._core.multiarray"):
    _ALLOWED[(_module, "_reconstruct")] = multiarray._reconstruct
for _module in ("numpy.core.numeric", "numpy._core.numeric"):  # protocol 5 arrays
    _ALLOWED[(_module, "_frombuffer")] = numeric._frombuffer


class RefusedPickleError(pickle.UnpicklingError):
    """A data pickle named a global outside the CIFAR format's types."""


class _DataOnly(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 str -> str, as torchvision reads
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        allowed = _ALLOWED.get((module, name))
        if allowed is None:
            raise RefusedPickleError(
                f"{self.path} names {module}.{name}, which a CIFAR batch never holds (only "
                "dicts, lists, strings, bytes, numbers and NumPy arrays); refused without "
                "running it. Replace the file with the published one"
            )
        return allowed


def load_cifar_pickle(path: str | Path) -> Any:
    """The object pickled in ``path``, if it uses only the CIFAR format's types.

    Raises:
        RefusedPickleError: the file names any other global (it is never called).
        pickle.UnpicklingError, EOFError: the file is not a complete pickle.
    """
    path = Path(path)
    with open(path, "rb") as f:
        obj = _DataOnly(f, path).load()
    _check_plain(obj, path)
    return obj


def _check_plain(obj: Any, path: Path) -> None:
    """Refuse anything but dicts, lists, strings, bytes, numbers and plain numeric arrays.

    A pickle may rebuild a ``numpy.dtype`` from crafted state (a structured dtype whose object
    field is not flagged as one), and an array of it turns raw bytes into pointers. Only the
    metadata is inspected here, never the array's contents, so such a file is refused before
    anything reads it."""
    if isinstance(obj, dict):
        for key, value in obj.items():
            _check_plain(key, path)
            _check_plain(value, path)
    elif isinstance(obj, list | tuple):
        for item in obj:
            _check_plain(item, path)
    elif isinstance(obj, np.ndarray):
        dtype = obj.dtype
        if dtype.kind not in "biuf" or dtype.fields is not None or dtype.hasobject:
            raise RefusedPickleError(
                f"{path} holds an array of dtype {dtype.str} (kind {dtype.kind!r}); a CIFAR "
                "batch holds only plain numeric arrays: refused"
            )
    elif not isinstance(obj, str | bytes | int | float | bool | type(None)):
        raise RefusedPickleError(
            f"{path} holds a {type(obj).__name__}; a CIFAR batch holds only dicts, lists, "
            "strings, bytes, numbers and numeric arrays: refused"
        )
