"""No data file runs code: the CIFAR python batches are read by a data-only unpickler. The
published layouts still load (NumPy 1 and 2 names, protocol 2 and 5); a crafted ``test_batch``
whose unpickling would call ``os.system`` is refused, naming the file and the global, and the
command never runs, whether read by ``make-c``, by a ``dataset.source=generate`` run or as
EATA's clean source samples."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pandas as pd
import pytest

from ttabench import cli
from ttabench.data.cifar_pickle import RefusedPickleError, load_cifar_pickle
from ttabench.run import run

from .c_fixtures import write_cifar_pickle
from .conftest import compose_run


class RunsCode:
    """Unpickling this calls ``os.system`` (what a crafted batch would do)."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def crafted_batch(path, marker) -> None:
    """A ``test_batch`` that looks right (data, labels) and runs a command when unpickled."""
    entry = {
        "data": np.zeros((10, 3072), np.uint8),
        "labels": list(range(10)),
        "x": RunsCode(marker),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(entry, protocol=2))


@pytest.mark.parametrize("protocol", [2, 5])
def test_published_batches_load_as_pickle_would(tmp_path, protocol):
    path = write_cifar_pickle(tmp_path, n=12)
    want = pickle.loads(path.read_bytes())
    path.write_bytes(pickle.dumps(want, protocol=protocol))
    got = load_cifar_pickle(path)
    assert got.keys() == want.keys() and got["labels"] == want["labels"]
    assert got["data"].dtype == np.uint8 and np.array_equal(got["data"], want["data"])


def test_numpy_1_names_and_python_2_strings_load(tmp_path):
    """The published files were written by Python 2 with NumPy 1 (``numpy.core.multiarray``)."""
    entry = {b"data": np.arange(6, dtype=np.uint8).reshape(2, 3), b"labels": [3, 4]}
    raw = pickle.dumps(entry, protocol=2).replace(
        b"numpy._core.multiarray", b"numpy.core.multiarray"
    )
    assert b"numpy.core.multiarray" in raw
    (tmp_path / "batch").write_bytes(raw)
    got = load_cifar_pickle(tmp_path / "batch")
    assert np.array_equal(got[b"data"], entry[b"data"]) and got[b"labels"] == [3, 4]


def test_a_crafted_batch_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "ran"
    crafted_batch(tmp_path / "test_batch", marker)
    with pytest.raises(RefusedPickleError, match=r"test_batch names posix\.system"):
        load_cifar_pickle(tmp_path / "test_batch")
    assert not marker.exists()


def test_make_c_refuses_a_crafted_batch(tmp_path, capsys):
    marker = tmp_path / "ran"
    crafted_batch(tmp_path / "root" / "cifar-10-batches-py" / "test_batch", marker)
    argv = ["make-c", "cifar10c", "--root", str(tmp_path / "root"), "--out", str(tmp_path / "out")]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("ttabench make-c: error: ") and "posix.system" in err
    assert "Traceback" not in err and not marker.exists()


def test_a_generate_run_refuses_a_crafted_batch(tmp_path):
    marker = tmp_path / "ran"
    crafted_batch(tmp_path / "root" / "cifar-10-batches-py" / "test_batch", marker)
    root = tmp_path / "root"
    cfg = compose_run(
        "dataset=cifar10c",
        "dataset.source=generate",
        f"dataset.root={root}",
        "dataset.corruptions=[contrast]",
        "dataset.n_per_domain=10",
        "progress=false",
        tiny=False,
    )
    with pytest.raises(Exception, match=r"posix\.system"):
        run(cfg, tmp_path / "run")
    summary = pd.read_csv(tmp_path / "run" / "summary.csv")
    assert summary["status"].iloc[-1] == "failed" and "posix.system" in summary["message"].iloc[-1]
    assert not marker.exists()


def test_source_samples_refuse_a_crafted_training_batch(tmp_path):
    from ttabench.data.source_data import source_data_provider

    marker = tmp_path / "ran"
    folder = tmp_path / "cifar-10-batches-py"
    crafted_batch(folder / "data_batch_1", marker)
    for k in range(2, 6):
        (folder / f"data_batch_{k}").write_bytes((folder / "data_batch_1").read_bytes())
    provider = source_data_provider("cifar10c", str(tmp_path), 0, 0)
    with pytest.raises(RefusedPickleError, match=r"data_batch_1 names posix\.system"):
        provider(8)
    assert not marker.exists()


def test_an_object_labels_npy_is_refused_without_running_it(tmp_path):
    """CIFAR-10-C's labels.npy / {corruption}.npy are read with allow_pickle=False: an object
    array (a pickle inside the .npy) is an error naming the file, and its code never runs."""
    from ttabench.data.cifar_c import CifarC

    from .c_fixtures import write_cifar_c

    folder = write_cifar_c(tmp_path / "CIFAR-10-C", ["contrast"])
    marker = tmp_path / "ran"
    np.save(
        folder / "labels.npy", np.array([RunsCode(marker)] * 3, dtype=object), allow_pickle=True
    )
    with pytest.raises(ValueError, match=r"labels\.npy is not a readable \.npy file"):
        CifarC(tmp_path, corruptions=["contrast"])
    assert not marker.exists()


class _CraftedDtype:
    """A structured dtype with an object field whose 'has objects' flag is cleared."""

    def __reduce__(self):
        state = list(np.dtype([("a", "O")]).__reduce__()[2])
        state[-1] = 0
        return (np.dtype, ("V8", False, True), tuple(state))


class _PointerArray:
    """An array of that dtype whose bytes would be read as an object pointer."""

    def __reduce__(self):
        from numpy._core.multiarray import _reconstruct

        return (_reconstruct, (np.ndarray, (0,), b"b"), (1, (1,), _CraftedDtype(), False, b"A" * 8))


def test_a_crafted_dtype_is_refused_before_its_bytes_are_read(tmp_path):
    """Allowed globals only (numpy.dtype, _reconstruct), but a dtype state that would make the
    array read raw bytes as a pointer (a segfault on access): refused on metadata alone."""
    path = tmp_path / "test_batch"
    path.write_bytes(pickle.dumps({"data": _PointerArray(), "labels": [0]}, protocol=2))
    with pytest.raises(RefusedPickleError, match="holds an array of dtype"):
        load_cifar_pickle(path)
