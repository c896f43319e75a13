"""Time how long building a stream takes at ImageNet-C size (50,000 samples in 1,000 classes).

Building must stay well under a second for every ordering (NOTE's retry loop took 5-7 s per
call in the Doebler repo, specs/streams.md). Prints the median and max wall time over
``--repeats`` stream seeds per ordering (each Dirichlet sampler at delta 0.1 and 0.01), for one
domain and, with ``--domains N``, for the ``mixed`` schedule over N domains.

Example:
    python scripts/bench_streams.py --repeats 7 --domains 15
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from ttabench.domains import Domain  # noqa: E402
from ttabench.streams import Stream, orderings  # noqa: E402

DELTAS = {"dirichlet": [0.1, 0.01], "dirichlet_rotta": [0.1, 0.01]}


def bench(stream: Stream, domains: list[Domain], y: np.ndarray, repeats: int) -> list[float]:
    times = []
    for seed in range(repeats):
        seeded = Stream(**(stream.config() | {"seed": seed}))
        start = time.perf_counter()
        seeded.build(domains, lambda d: y)
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--per-class", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--domains", type=int, default=0, help="also time mixed over N domains")
    args = parser.parse_args(argv)
    y = np.repeat(np.arange(args.classes, dtype=np.int64), args.per_class)
    np.random.default_rng(0).shuffle(y)
    setups = [("single", [Domain("gaussian_noise", 5)])]
    if args.domains:
        setups.append(("mixed", [Domain(f"domain{i}", 5) for i in range(args.domains)]))
    print(f"{len(y)} samples in {args.classes} classes per domain, {args.repeats} repeats")
    print(
        f"{'schedule':<8} {'ordering':<16} {'delta':>6} {'samples':>8} {'median ms':>10} "
        f"{'max ms':>8}"
    )
    for schedule, domains in setups:
        for name in orderings.names():
            for delta in DELTAS.get(name, [None]):
                knobs = {} if delta is None else {"delta": delta}
                stream = Stream(domains=schedule, labels=name, **knobs)
                times = 1000 * np.array(bench(stream, domains, y, args.repeats))
                print(
                    f"{schedule:<8} {name:<16} {delta or '':>6} {len(y) * len(domains):>8} "
                    f"{np.median(times):>10.1f} {times.max():>8.1f}"
                )


if __name__ == "__main__":
    main()
