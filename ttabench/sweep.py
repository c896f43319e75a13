"""Sweeps (``ttabench run -m``): launcher plugins, and the report printed when a sweep ends.

Hydra launches the runs of a sweep: ``hydra/launcher=basic`` (default, one after the other in
this process), ``joblib`` (parallel processes on this machine), ``submitit_local`` or
``submitit_slurm`` (one job per run; the presets are in ``configs/hydra/launcher/``). Each run
records its own status in ``summary.csv`` and never raises for a failed run, so no launcher
aborts the other runs; :class:`SweepReport` then tells the user what the sweep directory holds
and turns failures into the exit status, which Hydra would otherwise leave at 0.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

import pandas as pd
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from ttabench.resume import SUMMARY

#: ``hydra/launcher=<name>`` -> (the plugin's module, the ttabench extra that installs it).
LAUNCHER_PLUGINS: dict[str, tuple[str, str]] = {
    "joblib": ("hydra_plugins.hydra_joblib_launcher", "joblib"),
    "submitit_local": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
    "submitit_slurm": ("hydra_plugins.hydra_submitit_launcher", "slurm"),
}


def missing_launcher(overrides: list[str]) -> str | None:
    """Why the launcher chosen in ``overrides`` cannot run (its plugin is not installed), or None.

    Checked before Hydra starts, which would otherwise fail with an import traceback.
    """
    for item in overrides:
        key, _, name = item.partition("=")
        if key.lstrip("~+") == "hydra/launcher" and name in LAUNCHER_PLUGINS:
            module, extra = LAUNCHER_PLUGINS[name]
            if importlib.util.find_spec(module) is None:
                return (
                    f"hydra/launcher={name} needs the {module.split('.')[-1]} plugin: "
                    f"pip install 'ttabench[{extra}]'"
                )
    return None


def use_launcher_presets() -> None:
    """Make ``configs/hydra/launcher/<name>.yaml`` the only definition of those launchers.

    The plugins register ``joblib``, ``submitit_local`` and ``submitit_slurm`` in Hydra's
    ConfigStore; a config file of the same name would be validated against that entry, which
    Hydra warns is deprecated (once per process, workers included). The ttabench presets list
    every key with its ``_target_``, so the plugins' entries are dropped instead. Launchers
    receive the ConfigStore with Hydra's singleton state, so their workers see the same.
    """
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    from ttabench.config import config_dir

    Plugins.instance()  # imports every plugin, which registers its entries
    launchers = ConfigStore.instance().repo.get("hydra", {}).get("launcher", {})
    for preset in (config_dir() / "hydra" / "launcher").glob("*.yaml"):
        launchers.pop(preset.name, None)


def sweep_status(sweep_dir: Path) -> pd.DataFrame:
    """One row per run directory under ``sweep_dir``: ``run_dir``, ``status``, ``message``.

    A run's status is its ``all`` row's (``incomplete`` while running or after a kill).
    """
    rows = []
    for path in sorted(sweep_dir.rglob(SUMMARY)):
        summary = pd.read_csv(path, usecols=["status", "message"], keep_default_na=False)
        if not len(summary):
            status, message = "incomplete", "empty summary.csv"
        else:
            complete = (summary["status"] == "complete").all()
            status = "complete" if complete else summary["status"].iloc[-1]
            message = summary["message"].iloc[-1]
        rows.append({"run_dir": str(path.parent), "status": status, "message": message})
    return pd.DataFrame(rows, columns=["run_dir", "status", "message"])


#: Non-empty once a sweep has started in this process (its configuration composed): the CLI
#: holds standard error until then, to turn Hydra's own configuration errors into one line.
SWEEP_STARTED: list[bool] = []


class SweepIncomplete(SystemExit):
    """Exit status 1 of a sweep with a run that is not complete (not an input error)."""


class SweepReport(Callback):
    """Hydra callback (``hydra.callbacks`` in run.yaml): the end-of-sweep report.

    Runs in the launching process after every job, whichever the launcher. Exits with status 1
    when a run under the sweep directory is not complete, so scripts and ``make`` notice.
    """

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        SWEEP_STARTED.append(True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        status = sweep_status(sweep_dir)
        counts = status["status"].value_counts()
        summary = ", ".join(f"{n} {s}" for s, n in counts.items()) or "no runs"
        print(f"sweep {sweep_dir}: {len(status)} runs: {summary}")
        unfinished = status[status["status"] != "complete"]
        for _, run in unfinished.iterrows():
            print(f"  {run['status']}: {run['run_dir']}: {run['message']}", file=sys.stderr)
        if len(unfinished):
            print(
                f"rerun the same command with hydra.sweep.dir={sweep_dir} to redo only these",
                file=sys.stderr,
            )
            raise SweepIncomplete(1)
