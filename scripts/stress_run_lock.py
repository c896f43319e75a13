"""Two `run` processes started together on one run directory, many times: does exactly one run?

Each pair forks two processes that wait on a shared barrier, then both call ``run(cfg, dir)``
on the same fresh directory (a tiny embedded run, one torch thread each). Afterwards the
directory must hold one complete run: ``summary.csv`` complete, ``online.csv`` with every step
once and in order, no ``online.attempt*.csv`` (that would mean a second process redid it), and
the loser must have exited with :class:`~ttabench.lock.RunDirectoryBusy` (or found the run
complete, if the winner finished first). Prints the counts.

    python scripts/stress_run_lock.py --pairs 200
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from ttabench.config import config_dir  # noqa: E402
from ttabench.lock import RunDirectoryBusy  # noqa: E402
from ttabench.run import run  # noqa: E402

OVERRIDES = ["dataset.corruptions=[contrast]", "dataset.n_per_domain=256", "progress=false",
             "stream.batch_size=16", "threads=1"]  # fmt: skip


def _one(cfg, run_dir: Path, barrier, outcomes) -> None:
    torch.set_num_threads(1)
    barrier.wait()
    try:
        run(cfg, run_dir)
        outcomes.put("ran or skipped")
    except RunDirectoryBusy:
        outcomes.put("busy")
    except Exception as exc:  # noqa: BLE001 (counted as a failure of the check)
        outcomes.put(f"error: {type(exc).__name__}: {exc}")


def check(run_dir: Path, n_batches: int) -> list[str]:
    """What is wrong with ``run_dir`` after a pair (empty: one clean complete run)."""
    problems = []
    summary = pd.read_csv(run_dir / "summary.csv")
    if not (summary["status"] == "complete").all():
        problems.append(f"summary status {summary['status'].tolist()}")
    try:
        steps = pd.read_csv(run_dir / "online.csv")["step"].tolist()
    except (pd.errors.ParserError, ValueError) as exc:
        return [*problems, f"online.csv damaged ({str(exc).splitlines()[0]})"]
    if steps != list(range(n_batches)):
        problems.append(f"online.csv steps {steps[:5]}... ({len(steps)} rows)")
    if list(run_dir.glob("online.attempt*.csv")):
        problems.append("a second attempt (double run)")
    return problems


def stress(pairs: int, root: Path) -> dict[str, int]:
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose("run", OVERRIDES, return_hydra_config=True)
    n_batches = 256 // 16
    # Children fork from a clean server process (forking a process that has run OpenMP code,
    # such as a test session, can hang); the server imports ttabench once for all of them.
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(["ttabench.run"])
    counts = {"pairs": 0, "busy": 0, "ran or skipped": 0, "double runs or damage": 0, "errors": 0}
    for k in range(pairs):
        run_dir = root / f"pair{k}"
        barrier, outcomes = context.Barrier(2), context.Queue()
        procs = [context.Process(target=_one, args=(cfg, run_dir, barrier, outcomes)) for _ in "ab"]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        results = [outcomes.get() for _ in procs]
        counts["pairs"] += 1
        counts["busy"] += results.count("busy")
        counts["ran or skipped"] += results.count("ran or skipped")
        counts["errors"] += sum(r.startswith("error") for r in results)
        problems = check(run_dir, n_batches)
        if problems:
            counts["double runs or damage"] += 1
            print(f"pair {k}: {problems}; outcomes {results}", file=sys.stderr)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        counts = stress(args.pairs, Path(tmp))
    print(" ".join(f"{k}={v}" for k, v in counts.items()))
    return 0 if counts["double runs or damage"] == 0 and counts["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
