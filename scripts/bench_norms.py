"""Time the forward pass of every norm against ``bn`` (test-batch statistics) on the same batches.

Acceptance target (norm axis issue): UnMix-TNS's forward costs at most 1.3x ``bn``'s at batch
size 64 on the embedded model. Every norm is applied to a fresh model, warmed up, then timed
over ``--repeats`` rounds of ``--batches`` forward passes (eval mode, no gradient, as
``method=<norm>`` runs it), the norms taking turns within each round; the table shows the
median milliseconds per forward and the median over rounds of the ratio to ``bn``. ``--wide N``
adds the embedded architecture at N times the width (random weights), where convolutions weigh
more, as in real CIFAR/ImageNet models.

Example:
    python scripts/bench_norms.py --repeats 15 --wide 4
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from ttabench.models.embedded import build_net, load_embedded  # noqa: E402
from ttabench.models.wrapper import NormalizedModel  # noqa: E402
from ttabench.norms.alpha import AlphaNorm  # noqa: E402
from ttabench.norms.base import Norm  # noqa: E402
from ttabench.norms.bn import BatchStatsNorm  # noqa: E402
from ttabench.norms.ema import EMANorm  # noqa: E402
from ttabench.norms.rbn import RobustBNNorm  # noqa: E402
from ttabench.norms.source import SourceNorm  # noqa: E402
from ttabench.norms.unmix import UnMixNorm  # noqa: E402

NORMS: dict[str, Callable[[int], Norm]] = {
    "bn": lambda b: BatchStatsNorm(),
    "source": lambda b: SourceNorm(),
    "alpha": lambda b: AlphaNorm(),
    "ema": lambda b: EMANorm(),
    "rbn": lambda b: RobustBNNorm(),
    "unmix": lambda b: UnMixNorm(batch_size=b, seed=0),
    "unmix_k128": lambda b: UnMixNorm(num_components=128, batch_size=b, seed=0),
}


def wide_model(width: int) -> nn.Module:
    """The embedded ResNet-8 at ``width`` times the channels, random weights and statistics."""
    torch.manual_seed(0)
    net = build_net(width=width)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return NormalizedModel(net, (0.5,) * 3, (0.25,) * 3).eval()


@torch.no_grad()
def time_rounds(
    models: dict[str, nn.Module], batches: list[torch.Tensor], repeats: int
) -> dict[str, list[float]]:
    """Seconds per forward (mean over ``batches``) of every model in each of ``repeats`` rounds.

    The models take turns within a round, so a change in machine load (shared CPUs) hits all of
    them alike and the per-round ratios stay meaningful.
    """
    sync = torch.cuda.synchronize if batches[0].is_cuda else (lambda: None)
    for model in models.values():  # warm-up (allocator, kernel selection)
        for x in batches[:2]:
            model(x)
    times: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            sync()
            start = time.perf_counter()
            for x in batches:
                model(x)
            sync()
            times[name].append((time.perf_counter() - start) / len(batches))
    return times


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 1])
    parser.add_argument("--batches", type=int, default=5, help="forwards per round")
    parser.add_argument("--repeats", type=int, default=9, help="rounds; the median is shown")
    parser.add_argument("--wide", type=int, default=0, help="also a model N times as wide")
    parser.add_argument("--norms", nargs="+", default=list(NORMS), choices=list(NORMS))
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models: dict[str, Callable[[], nn.Module]] = {"embedded": load_embedded}
    if args.wide:
        models[f"wide{args.wide}"] = lambda: wide_model(args.wide)
    norms = ["bn", *[n for n in args.norms if n != "bn"]]
    print(f"device {device}, {torch.get_num_threads()} threads, median of {args.repeats} rounds")
    print(f"{'model':<10} {'batch':>5} {'norm':<11} {'ms/forward':>10} {'x bn':>6}")
    for model_name, build in models.items():
        for batch_size in args.batch_sizes:
            g = torch.Generator().manual_seed(batch_size)
            batches = [
                torch.rand(batch_size, 3, 32, 32, generator=g).to(device)
                for _ in range(args.batches)
            ]
            built = {n: NORMS[n](batch_size).apply(build()).to(device).eval() for n in norms}
            times = time_rounds(built, batches, args.repeats)
            for name in norms:  # ratio: median over rounds of (this norm / bn in that round)
                pairs = zip(times[name], times["bn"], strict=True)
                ratio = statistics.median(t / b for t, b in pairs)
                ms = 1e3 * statistics.median(times[name])
                print(f"{model_name:<10} {batch_size:>5} {name:<11} {ms:>10.3f} {ratio:>6.2f}")


if __name__ == "__main__":
    main()
