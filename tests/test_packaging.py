"""A plain (non-editable) install carries the configs and the shipped weights."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_contains_configs_and_weights_and_resolves_them(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(ROOT),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("ttabench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")}
    assert {f"ttabench/configs/{e}" for e in expected} <= names
    assert any(n.startswith("ttabench/models/weights/") and n.endswith(".pt") for n in names)
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--no-deps",
            "-q",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
        capture_output=True,
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    code = "import ttabench.config as c; print(c.config_dir())"
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=tmp_path,
        text=True,
        capture_output=True,
        check=True,
    )
    assert Path(out.stdout.strip()) == site / "ttabench" / "configs"
    help_out = subprocess.run(
        [sys.executable, "-m", "ttabench.cli", "run", "--help"],
        env=env,
        cwd=tmp_path,
        text=True,
        capture_output=True,
    )
    assert help_out.returncode == 0
    from ttabench.config import list_groups

    for group, options in list_groups().items():  # every group of the checkout, from the wheel
        assert f"{group}: {', '.join(options)}" in help_out.stdout
