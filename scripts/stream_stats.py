"""Print the label statistics of stream presets on a dataset, before spending GPU time.

Streams are index-only, so their statistics need only the labels: either a balanced synthetic
dataset of ``classes x per-class`` samples in shuffled order (every domain with the same labels,
as in CIFAR-10-C), or a dataset preset of ``configs/dataset/`` with its real labels and domains
(no image is decoded; ``--data`` passes ``dataset.<key>=<value>`` overrides). Columns are
means over batches (and over ``--seeds`` stream seeds): distinct classes per batch,
majority-class fraction, label entropy (nats), mean run length of identical consecutive labels,
domains per batch; see specs/streams.md.

Examples:
    python scripts/stream_stats.py                                   # every preset, CIFAR-10 size
    python scripts/stream_stats.py dirichlet ptta --dataset 1000x50  # ImageNet-C size
    python scripts/stream_stats.py dirichlet --set delta=0.01 batch_size=16
    python scripts/stream_stats.py --dataset embedded                # the embedded default
    python scripts/stream_stats.py --dataset cifar10c --data root=/data  # real CIFAR-10-C labels
    python scripts/stream_stats.py --spec-table                      # specs/streams.md table
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

from ttabench.domains import Domain  # noqa: E402
from ttabench.streams import Stream, summarize  # noqa: E402

CONFIGS = ROOT / "configs"
Labels = Callable[[Domain], np.ndarray]
ALIASES = {"cifar10": "10x1000", "cifar100": "100x100", "imagenet": "1000x50"}
CORRUPTIONS = ["gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur"]
CORRUPTIONS += ["motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast"]
CORRUPTIONS += ["elastic_transform", "pixelate", "jpeg_compression"]
COLUMNS = [
    ("n_classes", "classes/batch", "{:.2f}"),
    ("majority_frac", "majority", "{:.3f}"),
    ("label_entropy", "entropy", "{:.3f}"),
    ("run_length", "run length", "{:.1f}"),
    ("n_domains", "domains/batch", "{:.2f}"),
    ("samples", "samples", "{:.0f}"),
    ("batches", "batches", "{:.0f}"),
    ("resets", "resets", "{:.0f}"),
]
SPEC_ROWS = [
    (10, 1000, 1.0),
    (10, 1000, 0.1),
    (10, 1000, 0.01),
    (100, 100, 0.1),
    (100, 100, 0.01),
    (1000, 50, 0.1),
    (1000, 50, 0.01),
]


def parse_dataset(text: str) -> tuple[int, int] | str:
    """``"10x1000"``, an alias (cifar10, cifar100, imagenet) -> (classes, per class); the name of
    a dataset preset (``configs/dataset/<name>.yaml``) is returned as it is."""
    if (CONFIGS / "dataset" / f"{text}.yaml").is_file():
        return text
    k, _, n = ALIASES.get(text, text).partition("x")
    if not (k.isdigit() and n.isdigit() and int(k) > 0 and int(n) > 0):
        presets = sorted(p.stem for p in (CONFIGS / "dataset").glob("*.yaml"))
        raise argparse.ArgumentTypeError(
            f"dataset must be CLASSESxPER_CLASS, one of {sorted(ALIASES)} or a dataset preset "
            f"({', '.join(presets)})"
        )
    return int(k), int(n)


def synthetic_labels(classes: int, per_class: int, n_domains: int) -> tuple[list[Domain], Labels]:
    """Balanced labels in shuffled order, the same for every domain (as in CIFAR-10-C)."""
    y = np.repeat(np.arange(classes, dtype=np.int64), per_class)
    np.random.default_rng(0).shuffle(y)
    return [Domain(c, 5) for c in CORRUPTIONS[:n_domains]], lambda d: y


def dataset_labels(name: str, overrides: list[str]) -> tuple[list[Domain], Labels, str]:
    """The configured domains and the label function of a dataset preset (images untouched)."""
    extra = [o if o.startswith("dataset.") else f"dataset.{o}" for o in overrides]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose(overrides=[f"+dataset={name}", *extra])
    dataset = instantiate(cfg.dataset)
    return dataset.domains, cache(dataset.labels), f"{name}: {dataset.num_classes} classes"


def presets() -> list[str]:
    return sorted(p.stem for p in (CONFIGS / "stream").glob("*.yaml"))


def load_preset(name: str, overrides: list[str]) -> Stream:
    """Compose ``configs/stream/<name>.yaml`` (with ``stream.<key>=<value>`` overrides)."""
    if name not in presets():
        raise SystemExit(f"unknown stream preset {name!r}; presets: {', '.join(presets())}")
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        extra = [o if o.startswith("stream.") else f"stream.{o}" for o in overrides]
        cfg = compose(overrides=[f"+stream={name}", "+stream_seed=0", *extra])
    return instantiate(cfg.stream)


def measure(stream: Stream, domains: list[Domain], labels: Labels, seeds: int) -> dict:
    """Mean statistics over stream seeds, plus the median build time in ms."""
    runs, times = [], []
    for seed in range(seeds):
        seeded = Stream(**(stream.config() | {"seed": seed}))
        start = time.perf_counter()
        plan = seeded.build(domains, labels)
        times.append(time.perf_counter() - start)
        runs.append(summarize(plan, labels))
    out = {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}
    return out | {"build_ms": 1000 * float(np.median(times))}


def print_table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |")


def num(x: float) -> str:
    """About three significant digits, as in the spec's table."""
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def spec_table(seeds: int) -> None:
    """The measurement table of specs/streams.md: RoTTA's sampler / NOTE's sampler / i.i.d."""
    rows = []
    for k, n, delta in SPEC_ROWS:
        cells = [f"{k} x {n}", str(delta)]
        for labels in ["dirichlet_rotta", "dirichlet", "iid"]:
            s = measure(Stream(labels=labels, delta=delta), *synthetic_labels(k, n, 1), seeds)
            stats = (num(s["n_classes"]), f"{s['majority_frac']:.2f}", num(s["run_length"]))
            cells.append(" / ".join(stats))
        rows.append(cells)
    print(f"mean over {seeds} stream seeds; cells: classes/batch / majority / run length")
    print_table(["classes x per class", "delta", "RoTTA sampler", "NOTE sampler", "i.i.d."], rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("presets", nargs="*", help="stream presets (default: all)")
    parser.add_argument(
        "--dataset",
        type=parse_dataset,
        default=(10, 1000),
        help="CLASSESxPER_CLASS (e.g. 100x100), cifar10/cifar100/imagenet, or a dataset preset",
    )
    parser.add_argument("--data", nargs="*", default=[], metavar="KEY=VALUE", help="dataset keys")
    parser.add_argument("--domains", type=int, default=3, help="synthetic domains (default 3)")
    parser.add_argument("--seeds", type=int, default=3, help="stream seeds to average over")
    parser.add_argument("--set", nargs="*", default=[], metavar="KNOB=VALUE", help="overrides")
    parser.add_argument("--spec-table", action="store_true", help="reproduce specs/streams.md")
    args = parser.parse_args(argv)
    if args.spec_table:
        spec_table(args.seeds)
        return
    if isinstance(args.dataset, str):
        domains, labels, title = dataset_labels(args.dataset, args.data)
        title += f", {len(domains)} configured domain(s)"
    else:
        domains, labels = synthetic_labels(*args.dataset, args.domains)
        title = f"{args.dataset[0]} classes x {args.dataset[1]} per class, {len(domains)} domain(s)"
    rows = []
    for name in args.presets or presets():
        stream = load_preset(name, args.set)
        try:
            s = measure(stream, domains, labels, args.seeds)
        except ValueError as err:  # e.g. min_chunk impossible for this dataset size
            rows.append([name, stream.domains, stream.labels, f"error: {err}"] + [""] * 8)
            continue
        cells = [fmt.format(s[key]) for key, _, fmt in COLUMNS] + [f"{s['build_ms']:.1f}"]
        rows.append([name, stream.domains, stream.labels, *cells])
    print(f"{title}, mean over {args.seeds} stream seed(s)")
    print_table(["preset", "domains", "labels", *(c[1] for c in COLUMNS), "build ms"], rows)


if __name__ == "__main__":
    main()
