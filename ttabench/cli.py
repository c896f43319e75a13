"""The ``ttabench`` command: a thin front end over plain functions.

``run`` is a Hydra app (``@hydra.main`` parses ``sys.argv`` itself, so the front end rewrites it);
the other subcommands are argparse. Configuration mistakes (an unknown group option, a bad knob,
a missing data root) end with a one-paragraph error and exit code 2, never a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable

from ttabench.config import config_dir, list_groups

USAGE = """usage: ttabench <command> [arguments]

commands:
  run        stream a corrupted test set through a model and a TTA method (Hydra overrides;
             `ttabench run --help` lists the config groups and their options)
  compare    collect summary.csv files into paper-style error tables (`ttabench compare --help`)
  plot       figures from run directories: online accuracy, error vs delta, error per corruption
             (`ttabench plot --help`)
  list       list the config groups and their options
  pretrain   retrain a shipped source model: embedded, Fashion-MNIST (`ttabench pretrain --help`)
  download   fetch published datasets and checkpoints, checked against their checksums
             (opt-in: nothing else downloads; `ttabench download --list`)
  make-c     write a generated corruption benchmark in the published layout
             (`ttabench make-c --help`)
"""


def _run(argv: list[str]) -> int:
    import hydra
    from hydra.core.hydra_config import HydraConfig
    from hydra.errors import InstantiationException
    from hydra.types import RunMode
    from omegaconf import DictConfig
    from omegaconf.errors import OmegaConfBaseException

    from ttabench.errors import one_line
    from ttabench.run import run
    from ttabench.signals import signal_of
    from ttabench.sweep import (
        SWEEP_STARTED,
        SweepIncomplete,
        missing_launcher,
        use_launcher_presets,
    )

    problem = missing_launcher(argv) or _output_dir_problem(argv)
    if problem:
        print(f"ttabench run: error: {problem}", file=sys.stderr)
        return 2
    use_launcher_presets()

    started = SWEEP_STARTED  # a job (or, in this process, a sweep) began: the config composed
    started.clear()

    @hydra.main(config_path=str(config_dir()), config_name="run", version_base="1.3")
    def task(cfg: DictConfig) -> None:
        started.append(True)
        if HydraConfig.get().mode == RunMode.RUN and HydraConfig.get().sweeper.get("params"):
            print("ttabench run: error: a sweep preset (+sweep=...) sweeps its values only "
                  "under -m: ttabench run -m +sweep=...", file=sys.stderr)  # fmt: skip
            sys.exit(2)
        try:
            summary = run(cfg)
        except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: recorded by run(); one line
            name, signum = signal_of(exc)
            where = HydraConfig.get().runtime.output_dir
            print(f"ttabench run: interrupted ({name}): {where} keeps every row it logged; "
                  "run the same command again to resume", file=sys.stderr)  # fmt: skip
            sys.exit(128 + signum)
        except Exception as exc:  # run() raises only what stopped it before streaming
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"ttabench run: error: {one_line(exc)}", file=sys.stderr)
            if HydraConfig.get().mode == RunMode.MULTIRUN:
                return  # recorded as failed in summary.csv; the other runs of the sweep go on
            bad_input = (
                InstantiationException,
                ValueError,
                FileNotFoundError,
                OmegaConfBaseException,
            )
            sys.exit(2 if isinstance(exc, bad_input) else 1)
        columns = ["domain", "severity", "n", "error", "status"]
        if "n_outliers" in summary and summary["n_outliers"].fillna(0).gt(0).any():
            columns[3:3] = ["n_outliers"]
            columns[5:5] = ["auroc", "fpr95", "h_score"]  # after error: ID error, then detection
        print(summary[columns].to_string(index=False, float_format="%.2f"))
        print(f"results: {HydraConfig.get().runtime.output_dir}")
        if HydraConfig.get().mode == RunMode.RUN and summary["status"].iloc[-1] != "complete":
            sys.exit(1)

    sys.argv = ["ttabench run", *argv]
    held = _HeldUntil(sys.stderr, started)  # Hydra's own errors come before any job starts
    sys.stderr = held
    try:
        task()
    except SystemExit as exc:  # Hydra exits 1 on its own configuration errors: bad input, 2
        if exc.code == 1 and not started and not isinstance(exc, SweepIncomplete):
            print(f"ttabench run: error: {held.one_line()}", file=held.stream)
            held.held = []
            raise SystemExit(2) from None
        raise
    finally:
        sys.stderr = held.stream
        started.append(True)
        held.release()  # whatever else was held (e.g. a joblib sweep's report) is printed
    return 0


class _HeldUntil:
    """Standard error that holds what is written until ``started`` is non-empty (a job runs),
    so Hydra's multi-line configuration errors can be reported as one line instead."""

    def __init__(self, stream, started: list) -> None:
        self.stream, self.started, self.held = stream, started, []

    def write(self, text: str) -> int:
        if self.started:
            self.release()
            return self.stream.write(text)
        self.held.append(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def release(self) -> None:
        """Pass on what was held (a run that started: its early log lines)."""
        if self.held and self.started:
            self.stream.write("".join(self.held))
        self.held = [] if self.started else self.held

    def one_line(self) -> str:
        text = "".join(self.held).split("Config search path")[0]
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        skip = ("Set the environment variable", "full_key:", "object_type=")
        parts: list[str] = []
        for line in (line for line in lines if not line.startswith(skip)):
            if parts and parts[-1].endswith((":", ",")) and " " not in line:  # an option list
                parts[-1] += (" " if parts[-1].endswith(":") else " ") + line + ","
            else:
                parts.append(line)
        return "; ".join(part.rstrip(",") for part in parts)

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _output_dir_problem(argv: list[str]) -> str | None:
    """A ``hydra.run.dir`` / ``hydra.sweep.dir`` that cannot be created (Hydra would raise)."""
    from ttabench.paths import dir_problem

    for arg in argv:
        key, _, value = arg.partition("=")
        if key in ("hydra.run.dir", "hydra.sweep.dir") and value and "${" not in value:
            problem = dir_problem(value)
            if problem:
                return f"{key}={value}: {problem}"
    return None


def _list(argv: list[str]) -> int:
    for group, options in list_groups().items():
        print(f"{group}: {', '.join(options)}")
    return 0


def _pretrain(argv: list[str]) -> int:
    from ttabench.pretrain import main

    return main(argv)


def _download(argv: list[str]) -> int:
    from ttabench.download import main

    return main(argv)


def _make_c(argv: list[str]) -> int:
    from ttabench.data.make_c import main

    return main(argv)


def _compare(argv: list[str]) -> int:
    from ttabench.compare import main

    return main(argv)


def _plot(argv: list[str]) -> int:
    from ttabench.plot import main

    return main(argv)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "run": _run,
    "compare": _compare,
    "list": _list,
    "pretrain": _pretrain,
    "make-c": _make_c,
    "plot": _plot,
    "download": _download,
}


def _one_line_warnings(command: str) -> None:
    """Warnings as ``ttabench <command>: warning: ...`` lines, without a source excerpt."""

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        print(f"ttabench {command}: warning: {message}", file=file or sys.stderr)

    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0
    command = COMMANDS.get(argv[0])
    if command is not None:
        _one_line_warnings(argv[0])
    if command is None:
        print(USAGE, file=sys.stderr)
        print(f"ttabench: error: unknown command {argv[0]!r}; valid: {', '.join(COMMANDS)}",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        return command(argv[1:])
    except BrokenPipeError:  # `ttabench compare ... | head`: the reader left; not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second one at exit
        return 141  # 128 + SIGPIPE, as a shell reports a command killed by it


if __name__ == "__main__":
    sys.exit(main())
