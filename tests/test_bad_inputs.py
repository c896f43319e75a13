"""The bad-input catalogue (scripts/bad_inputs.py: 95 cases over run, compare, plot, make-c,
download, pretrain and the front end): each ends in one ``ttabench <command>: error:`` line
that names the key, value or file, exit 2 for bad input, no traceback, and the run directory
recorded as the case says (``failed``, or nothing written for errors caught before the run
starts)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
catalogue = importlib.import_module("bad_inputs")
sys.path.pop(0)


def test_the_catalogue_holds_at_least_60_cases_over_every_command():
    commands = {case.argv[0] for case in catalogue.CASES}
    assert len(catalogue.CASES) >= 60
    assert {"run", "compare", "plot", "make-c", "pretrain"} <= commands


@pytest.mark.parametrize("case", catalogue.CASES, ids=[c.name for c in catalogue.CASES])
def test_bad_input(case, tmp_path):
    got = catalogue.run(case, tmp_path)
    assert got.code == case.code, got.line
    assert not got.traceback, got.line
    assert got.line.startswith(("ttabench ", "ttabench: error")) and "error: " in got.line
    assert case.names.replace("{tmp}", str(tmp_path)) in got.line
    assert got.status == (case.status or "-")
    assert not (tmp_path / "ran").exists()  # no crafted file ran its code
