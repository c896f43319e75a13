"""The CIFAR python batches (``cifar-10-batches-py/*_batch``, ``cifar-100-python/{train,test}``)
read without letting the file run code.

Krizhevsky's batches are pickles, and ``pickle.load`` executes whatever callable a crafted file
names (``os.system`` included). A batch only ever holds dicts, lists, strings, bytes, numbers
and NumPy arrays, so the unpickler here resolves exactly the globals those need: NumPy's array
reconstruction (``numpy.core.multiarray._reconstruct`` / ``scalar``, ``numeric._frombuffer`` for
protocol 5, under NumPy 1 or 2 names), ``numpy.ndarray``, ``numpy.dtype`` and ``_codecs.encode``
(how protocol 2 writes bytes).
Anything else is refused with an error naming the file and the global, before it is called.
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
    _ALLOWED[(_module, "scalar")] = multiarray.scalar
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
        return _DataOnly(f, path).load()
