"""Benchmark of the harness on any device: its overhead, every norm and method, the data path.

Writes ``bench.csv`` (one row per case: ``case, group, device, model, batch_size, images_per_s,
ratio_to_bare, baseline, peak_mem_mb, repeats``) and prints it as a table, then the acceptance
checks of the performance issue. ``ratio_to_bare`` is a throughput ratio, case / baseline (1.0:
as fast as the baseline; 0.5: twice its time), each the median over interleaved rounds measured
in this one process, so a change of machine load hits case and baseline alike.

- ``harness``: the whole ``run(cfg)`` with ``method=source`` on the embedded benchmark (first
  three corruptions; data read, stream, logging, summaries) vs a bare loop of ``model(x)`` over
  the same batches pre-loaded on the device, in mirrored rounds (bare, run, run, bare). Fixed
  costs included. A second row splits each run
  from within: the share of its wall time spent in the method call (the ``seconds`` column of
  ``online.csv``). Both halves of that share are measured at the same moments, so it holds still
  on a machine whose speed drifts, where the direct ratio needs many rounds.
- ``norm=<name>``: a no-grad forward under each norm vs the bare forward (``norm=source``).
- ``method=<name>``: one call of each adapting method on its default norm vs the bare forward
  (no gradient) or forward + entropy backward on a plain copy under the same norm (gradient
  methods: those that back-propagate).
- ``read:cifar_c`` / ``read:imagenet_c``: images/s of the CIFAR-C reader (memory-mapped ``.npy``)
  and of the ImageNet-C folder reader (JPEG decode; one thread and the default thread pool), on
  files written to a temporary folder in the published layouts.
- ``corrupt:<name>``: on-the-fly corruption of uint8 batches on the device.
- ``stream:imagenet_c``: a whole ImageNet-C domain (50,000 images; ``--quick``: 5,000) streamed
  through the loader with read-ahead; ``peak_mem_mb`` is the growth of the resident set over the
  stream, which must stay a few batches (a float batch of 64 x 224 x 224 is 38.5 MB).

``peak_mem_mb``: the memory one untimed pass of the case needs above what the process held
before it (growth of the resident set on the CPU, of CUDA allocations on a GPU).

    python scripts/bench.py --quick                   # a minute or two on CPU
    python scripts/bench.py                           # the README figures
    python scripts/bench.py --device cuda --harness-model wrn28_10 --harness-batch-size 200
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT, ROOT / "scripts"):  # run from a checkout without `pip install -e .`
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from hydra import compose, initialize_config_dir  # noqa: E402
from hydra.utils import instantiate  # noqa: E402
from PIL import Image  # noqa: E402

from ttabench.config import config_dir, list_groups  # noqa: E402
from ttabench.data.cifar_c import CifarC  # noqa: E402
from ttabench.data.corruptions import available_corruptions, corrupt, sample_generators  # noqa: E402
from ttabench.data.folder_c import FolderC  # noqa: E402
from ttabench.loader import BatchLoader  # noqa: E402
from ttabench.memory import PeakMemory, rss_mb  # noqa: E402
from ttabench.methods.defaults import apply_dataset_defaults  # noqa: E402
from ttabench.methods.entropy import softmax_entropy  # noqa: E402
from ttabench.run import build_method, run  # noqa: E402
from ttabench.streams import Stream  # noqa: E402

COLUMNS = (
    "case",
    "group",
    "device",
    "model",
    "batch_size",
    "images_per_s",
    "ratio_to_bare",
    "baseline",
    "peak_mem_mb",
    "repeats",
)
HARNESS_CORRUPTIONS = "[gaussian_noise,shot_noise,impulse_noise]"
CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "defocus_blur",
    "zoom_blur",
    "snow",
    "frost",
    "contrast",
    "elastic_transform",
    "jpeg_compression",
)


def timed_rounds(
    cases: dict[str, Callable[[], None]],
    repeats: int,
    sync: Callable[[], None],
    mirrored: bool = False,
) -> dict[str, list[float]]:
    """Seconds of every case in each of ``repeats`` rounds; the cases take turns in a round.

    ``mirrored``: each round runs the cases forward then backward (A B B A) and records the sum
    of the two, which cancels a machine speed that drifts linearly within the round (long
    cases on a shared machine).
    """
    for fn in cases.values():  # warm-up: allocator, kernel selection, caches
        fn()
    order = list(cases)
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(repeats):
        spent = dict.fromkeys(order, 0.0)
        for name in order + order[::-1] if mirrored else order:
            sync()
            start = time.perf_counter()
            cases[name]()
            sync()
            spent[name] += time.perf_counter() - start
        for name in order:
            times[name].append(spent[name] / (2 if mirrored else 1))
    return times


def throughput_ratio(times: dict[str, list[float]], case: str, baseline: str) -> float:
    """Median over rounds of baseline seconds / case seconds (the case's relative throughput)."""
    return statistics.median(b / c for c, b in zip(times[case], times[baseline], strict=True))


def peak_mb(fn: Callable[[], None], device: torch.device) -> float:
    """Memory that one call of ``fn`` needs above what the process held before it (MB): growth
    of the resident set on the CPU, of CUDA allocations on a GPU."""
    if device.type == "cuda":
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    before = rss_mb()
    memory = PeakMemory(device)
    fn()
    return memory.peaks()["peak_rss_mb"] - before


def row(case, group, device, model, batch, images_per_s, ratio, baseline, mem, repeats) -> dict:
    values = (
        case,
        group,
        device.type,
        model,
        batch,
        round(images_per_s, 1),
        round(ratio, 4) if ratio == ratio else ratio,
        baseline,
        round(mem, 1),
        repeats,
    )
    return dict(zip(COLUMNS, values, strict=True))


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device)
        self.sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        self.rows: list[dict] = []

    def compose(self, *overrides: str):
        base = [f"device={self.device}", "progress=false", "resume=false"]
        with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
            cfg = compose("run", [*base, *overrides], return_hydra_config=True)
        apply_dataset_defaults(cfg, list(cfg.hydra.overrides.task))
        return cfg

    # -- harness ------------------------------------------------------------------------------

    def harness(self) -> None:
        a = self.args
        overrides = [
            f"dataset.corruptions={HARNESS_CORRUPTIONS}",
            f"dataset.n_per_domain={a.harness_n}",
            f"stream.batch_size={a.harness_batch_size}",
            f"model={a.harness_model}",
            *(["model.pretrained=false"] if a.harness_model != "embedded" else []),
        ]
        cfg = self.compose(*overrides)
        dataset = instantiate(cfg.dataset)  # generates the cache before anything is timed
        plan = instantiate(cfg.stream).build(dataset.domains, dataset.labels)
        batches = [x for _, x in BatchLoader(dataset, plan, self.device, prefetch=0)]
        model = build_method(cfg, int(dataset.num_classes), self.device).model

        @torch.no_grad()
        def bare() -> None:
            for x in batches:
                model(x)

        with tempfile.TemporaryDirectory() as tmp:
            shares: list[float] = []

            def harness() -> None:
                start = time.perf_counter()
                run(cfg, Path(tmp) / "run")
                wall = time.perf_counter() - start
                shares.append(pd.read_csv(Path(tmp) / "run" / "online.csv")["seconds"].sum() / wall)

            cases = {"bare": bare, "harness": harness}
            times = timed_rounds(cases, a.repeats, self.sync, mirrored=True)
            mem = {case: peak_mb(fn, self.device) for case, fn in cases.items()}
        n = len(plan)
        for case, baseline in (("bare", "bare"), ("harness", "bare")):
            ips = n / statistics.median(times[case])
            ratio = throughput_ratio(times, case, baseline)
            mem_case = mem[case]
            name = "harness: run method=source" if case == "harness" else "bare: model(x) loop"
            self.rows.append(
                row(
                    name,
                    "harness",
                    self.device,
                    a.harness_model,
                    a.harness_batch_size,
                    ips,
                    ratio,
                    "bare",
                    mem_case,
                    a.repeats,
                )
            )
        share = statistics.median(shares[1:])  # without the warm-up run
        self.rows.append(
            row(
                "harness: model share of the run's time",
                "harness",
                self.device,
                a.harness_model,
                a.harness_batch_size,
                float("nan"),
                share,
                "run wall time",
                mem["harness"],
                a.repeats,
            )
        )

    # -- norms and methods --------------------------------------------------------------------

    def batches(self, n: int, size: int = 32) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(0)
        shape = (self.args.batch_size, 3, size, size)
        return [torch.rand(shape, generator=g).to(self.device) for _ in range(n)]

    def norms_and_methods(self) -> None:
        a = self.args
        batches = self.batches(a.batches)
        groups = list_groups()
        norms = groups["norm"]
        methods = [m for m in groups["method"] if m not in norms and m != "source"]
        if a.methods:
            methods = [m for m in methods if m in a.methods.split(",")]
        bare_model = build_method(self.compose("norm=source"), 10, self.device).model

        def forward(model) -> Callable[[], None]:
            @torch.no_grad()
            def step() -> None:
                for x in batches:
                    model(x)

            return step

        def forward_backward(model) -> Callable[[], None]:
            def step() -> None:
                for x in batches:
                    model.zero_grad(set_to_none=True)
                    softmax_entropy(model(x)).mean().backward()

            return step

        cases: dict[str, Callable[[], None]] = {"bare forward": forward(bare_model)}
        kinds: dict[str, tuple[str, str]] = {"bare forward": ("norm", "bare forward")}
        for norm in norms:
            model = build_method(self.compose(f"norm={norm}"), 10, self.device).model
            cases[f"norm={norm}"] = forward(model)
            kinds[f"norm={norm}"] = ("norm", "bare forward")
        for name in methods:
            cfg = self.compose(
                f"method={name}", *(["method.fisher_size=256"] if name == "eata" else [])
            )
            method = build_method(cfg, 10, self.device)
            method(batches[0])
            gradient = method.pop_costs()["backwards"] > 0
            cases[f"method={name}"] = functools.partial(_each, method, batches)
            if gradient:
                norm = cfg.hydra.runtime.choices.norm
                fb = f"bare forward+backward (norm={norm})"
                if fb not in cases:  # every parameter trainable: a plain training step
                    plain = build_method(self.compose(f"norm={norm}"), 10, self.device).model
                    plain.requires_grad_(True)
                    cases[fb] = forward_backward(plain)
                    kinds[fb] = ("method", fb)
                kinds[f"method={name}"] = ("method", fb)
            else:
                kinds[f"method={name}"] = ("method", "bare forward")
        times = timed_rounds(cases, a.repeats_small, self.sync)
        images = len(batches) * a.batch_size
        for case, (group, baseline) in kinds.items():
            ips = images / statistics.median(times[case])
            self.rows.append(
                row(
                    case,
                    group,
                    self.device,
                    "embedded",
                    a.batch_size,
                    ips,
                    throughput_ratio(times, case, baseline),
                    baseline,
                    peak_mb(cases[case], self.device),
                    a.repeats_small,
                )
            )

    # -- data path ----------------------------------------------------------------------------

    def data_path(self) -> None:
        a = self.args
        with tempfile.TemporaryDirectory() as tmp:
            self._cifar_reader(Path(tmp))
            self._folder_reader(Path(tmp))
        names = [c for c in CORRUPTIONS if c in available_corruptions()]
        images = torch.randint(
            0,
            256,
            (a.batch_size, 3, 32, 32),
            dtype=torch.uint8,
            generator=torch.Generator().manual_seed(0),
        ).to(self.device)
        cases = {
            f"corrupt:{c}": lambda c=c: corrupt(
                images, c, 5, sample_generators(0, c, 5, range(a.batch_size)), "cifar"
            )
            for c in names
        }
        times = timed_rounds(cases, a.repeats_small, self.sync)
        for case in cases:
            ips = a.batch_size / statistics.median(times[case])
            self._data_row(case, ips, peak_mb(cases[case], self.device), a.repeats_small)

    def _cifar_reader(self, tmp: Path) -> None:
        from bench_readers import write_files

        write_files(tmp / "CIFAR-10-C", ["gaussian_noise"], fill=True)
        dataset = CifarC(tmp, corruptions=["gaussian_noise"], severity=5, n_per_domain=None)
        self._reader_row("read:cifar_c (memory-mapped .npy)", dataset)

    def _folder_reader(self, tmp: Path) -> None:
        write_imagenet_c(tmp / "ImageNet-C", wnids=20, files=8, distinct=16)
        for workers, label in ((1, "1 thread"), (None, f"{min(8, os.cpu_count() or 1)} threads")):
            dataset = FolderC(tmp, corruptions=["gaussian_noise"], n_per_domain=None,
                              num_classes=20, workers=workers)  # fmt: skip
            self._reader_row(f"read:imagenet_c (JPEG decode, {label})", dataset)

    def _reader_row(self, case: str, dataset) -> None:
        """Images/s of reading one domain through the loader, batches as the runner gets them."""
        plan = Stream(batch_size=self.args.batch_size, seed=0).build(
            dataset.domains, dataset.labels
        )

        def read() -> None:
            for _ in BatchLoader(dataset, plan, self.device):
                pass
            self.sync()

        times = timed_rounds({"read": read}, self.args.repeats_small, self.sync)
        ips = len(plan) / statistics.median(times["read"])
        self._data_row(case, ips, peak_mb(read, self.device), self.args.repeats_small)

    def _data_row(self, case: str, images_per_s: float, mem: float, repeats: int) -> None:
        group = "memory" if case.startswith("stream:") else "data"
        batch = 64 if group == "memory" else self.args.batch_size
        nan = float("nan")
        self.rows.append(row(case, group, self.device, "-", batch, images_per_s, nan, "-", mem,
                             repeats))  # fmt: skip

    def imagenet_stream(self) -> None:
        """A whole ImageNet-C domain through the loader with read-ahead: RSS growth and speed."""
        n = self.args.stream_n
        with tempfile.TemporaryDirectory() as tmp:
            write_imagenet_c(Path(tmp) / "ImageNet-C", wnids=1000, files=n // 1000, distinct=32)
            dataset = FolderC(tmp, corruptions=["gaussian_noise"], n_per_domain=None)
            plan = Stream(batch_size=64, seed=0).build(dataset.domains, dataset.labels)
            start = time.perf_counter()

            def stream() -> None:
                for _ in BatchLoader(dataset, plan, self.device, prefetch=2):
                    pass
                self.sync()

            growth = peak_mb(stream, torch.device("cpu"))  # host memory, whatever the device
            seconds = time.perf_counter() - start
        case = f"stream:imagenet_c ({n} images, prefetch 2, RSS growth)"
        self._data_row(case, len(plan) / seconds, growth, 1)


def _each(method: Callable[[torch.Tensor], torch.Tensor], batches: list[torch.Tensor]) -> None:
    for x in batches:
        method(x)


def write_imagenet_c(folder: Path, wnids: int, files: int, distinct: int) -> Path:
    """An ImageNet-C ``gaussian_noise/5/{wnid}/*.JPEG`` folder of 224 x 224 JPEGs: ``distinct``
    real files (smooth colour fields with noise, about the size of ImageNet-C's), the rest hard
    links to them (so 50,000 images cost seconds and little disk)."""
    rng = np.random.default_rng(0)
    sources = []
    for k in range(distinct):
        low = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        image = np.asarray(Image.fromarray(low).resize((224, 224), Image.BILINEAR), dtype=np.int16)
        image = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
        path = folder / f"source_{k}.JPEG"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(path, quality=85)
        sources.append(path)
    for w in range(wnids):
        wnid_dir = folder / "gaussian_noise" / "5" / f"n{w:08d}"
        wnid_dir.mkdir(parents=True, exist_ok=True)
        for f in range(files):
            target = wnid_dir / f"ILSVRC2012_val_{w * files + f:08d}.JPEG"
            os.link(sources[(w * files + f) % distinct], target)
    return folder


def print_table(frame: pd.DataFrame) -> None:
    shown = frame.assign(
        time_x=(1 / frame["ratio_to_bare"]).round(3),
    )[
        [
            "case",
            "device",
            "batch_size",
            "images_per_s",
            "ratio_to_bare",
            "time_x",
            "baseline",
            "peak_mem_mb",
        ]
    ]
    print(shown.to_markdown(index=False) if _has_tabulate() else shown.to_string(index=False))


def _has_tabulate() -> bool:
    try:
        import tabulate  # noqa: F401
    except ImportError:
        return False
    return True


def acceptance(frame: pd.DataFrame) -> list[str]:
    """The performance issue's targets, each with the measured value."""
    ratio = frame.set_index("case")["ratio_to_bare"]
    lines = []
    if "harness: run method=source" in ratio:
        value = ratio["harness: run method=source"]
        lines.append(f"harness / bare (method=source): {value:.3f} (target >= 0.97 on CPU)")
    if {"norm=unmix", "norm=bn"} <= set(ratio.index):
        value = ratio["norm=bn"] / ratio["norm=unmix"]
        lines.append(f"UnMix-TNS forward / bn forward: {value:.3f}x (target <= 1.2)")
    if "method=tent" in ratio:
        value = 1 / ratio["method=tent"]
        lines.append(f"TENT step / bare forward+backward: {value:.3f}x (target <= 1.1)")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: a minute or two")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument(
        "--cases",
        default="harness,norms,data,memory",
        help="harness, norms (norms and methods), data, memory",
    )
    parser.add_argument("--methods", default="", help="only these methods (comma-separated)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--harness-model", default="embedded")
    parser.add_argument("--harness-batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, help="bench.csv folder [results/bench/<device>]")
    args = parser.parse_args(argv)
    quick = args.quick
    args.harness_n = 2000 if quick else 10_000
    args.repeats = 2 if quick else 5
    args.repeats_small = 3 if quick else 7
    args.batches = 3 if quick else 5
    args.stream_n = 5_000 if quick else 50_000
    if args.threads:
        torch.set_num_threads(args.threads)
    out = args.out or ROOT / "results" / "bench" / torch.device(args.device).type
    bench = Bench(args)
    steps = {
        "harness": bench.harness,
        "norms": bench.norms_and_methods,
        "data": bench.data_path,
        "memory": bench.imagenet_stream,
    }
    unknown = set(args.cases.split(",")) - set(steps)
    if unknown:
        parser.error(f"unknown case(s) {sorted(unknown)}; valid: {', '.join(steps)}")
    print(
        f"device {bench.device}, {torch.get_num_threads()} torch threads, "
        f"{'quick' if quick else 'full'} sizes"
    )
    for name in args.cases.split(","):
        start = time.perf_counter()
        steps[name]()
        print(f"  {name}: {time.perf_counter() - start:.0f} s", flush=True)
    frame = pd.DataFrame(bench.rows, columns=COLUMNS)
    out.mkdir(parents=True, exist_ok=True)
    frame.to_csv(out / "bench.csv", index=False)
    print_table(frame)
    print("\n".join(acceptance(frame)))
    print(f"wrote {out / 'bench.csv'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
