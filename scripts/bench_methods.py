"""Time one adaptation step of each method against a bare forward and forward + backward.

The hot-path goal of the method interface: a TENT step costs about one forward plus one backward
(no model or optimizer copy per batch, no extra host sync). For each method (built as ``run``
builds it, on the embedded model) this times ``method(x)`` on the same batch, and the two
baselines on a plain copy of the model under the same norm: a no-grad forward, and a forward +
entropy backward. Medians over ``--repeats`` after ``--warmup`` calls; ratios to forward +
backward.

    python scripts/bench_methods.py --threads 1 --batch-size 64 --repeats 30
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from ttabench.config import config_dir  # noqa: E402
from ttabench.methods.defaults import apply_dataset_defaults  # noqa: E402
from ttabench.methods.entropy import softmax_entropy  # noqa: E402
from ttabench.run import build_method  # noqa: E402

METHODS = ("source", "tent", "eta", "eata", "sar", "deyo", "lame")


def median_ms(step, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--norm", default="bn")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    x = torch.rand(args.batch_size, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    rows = []
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        base = compose("run", [f"norm={args.norm}"], return_hydra_config=True)
        model = instantiate(base.norm).apply(instantiate(base.model))

        def forward() -> None:
            with torch.no_grad():
                model(x)

        def forward_backward() -> None:
            model.zero_grad(set_to_none=True)
            softmax_entropy(model(x)).mean().backward()

        fwd = median_ms(forward, args.warmup, args.repeats)
        fwd_bwd = median_ms(forward_backward, args.warmup, args.repeats)
        rows += [("forward (no grad)", fwd), ("forward + backward", fwd_bwd)]
        for name in args.methods.split(","):
            overrides = [f"method={name}", f"norm={args.norm}", "method.fisher_size=256"]
            cfg = compose("run", overrides if "eata" in name else overrides[:2],
                          return_hydra_config=True)  # fmt: skip
            apply_dataset_defaults(cfg, cfg.hydra.overrides.task)
            step = functools.partial(build_method(cfg, 10, "cpu"), x)
            rows.append((f"{name} (norm={args.norm})", median_ms(step, args.warmup, args.repeats)))
    print(f"batch {args.batch_size}, {args.threads} thread(s), median of {args.repeats}")
    print("| step | ms / batch | / (forward + backward) |\n|---|---:|---:|")
    for name, ms in rows:
        print(f"| {name} | {ms:.2f} | {ms / fwd_bwd:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
