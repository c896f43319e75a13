"""Peak memory of streaming CIFAR-10-C from memory-mapped files vs loading every file.

Writes full-size CIFAR-10-C files (15 x (50000, 32, 32, 3) uint8 + labels.npy, the published
layout) into a temporary folder, then streams a continual 15-domain stream
(``Stream(domains="continual")``, batches of 64, severity 5) through ``CifarC.images`` per
batch, converting each batch to float like the runner does. Reports, per variant: the
tracemalloc peak (Python/NumPy allocations; torch's own allocator is not traced), the growth of
``ru_maxrss`` (resident set high-water mark) and the peaks of RssAnon / RssFile sampled from
``/proc/self/status`` after every batch (no psutil), all relative to the process after its
imports. Each variant runs in its own process, so
high-water marks do not leak between them:

- ``reader``: ``CifarC`` as shipped (mapped pages released every 1024 rows read);
- ``never released``: the same maps, pages never released (plain ``np.load(mmap_mode="r")``
  use: the RSS grows by every row touched);
- ``load all``: ``np.load`` of all 15 files into memory (what the reader avoids).

The files are sparse by default (``open_memmap`` writes only the pages given values; holes read
as zeros through the page cache, which is what a real file costs too, minus the disk); ``--fill``
writes random bytes into every row (2.3 GB of disk, slower).

Example:
    python scripts/bench_readers.py            # 15 corruptions, all 10,000 images per domain
    python scripts/bench_readers.py --corruptions 5 --n-per-domain 2000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

from ttabench.data.cifar_c import CifarC  # noqa: E402
from ttabench.data.corruptions import COMMON_CORRUPTIONS  # noqa: E402
from ttabench.loader import fetch_images  # noqa: E402
from ttabench.streams import Stream  # noqa: E402

MB = 1e6
VARIANTS = ("reader", "never released", "load all")


def write_files(folder: Path, corruptions: list[str], fill: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    labels = rng.permutation(np.arange(10_000) % 10).astype(np.uint8)
    np.save(folder / "labels.npy", np.tile(labels, 5))
    for c in corruptions:
        array = np.lib.format.open_memmap(folder / f"{c}.npy", "w+", np.uint8, (50_000, 32, 32, 3))
        rows = range(0, 50_000, 5_000) if fill else [40_000]
        for start in rows:  # a few recognisable rows, or everything with --fill
            array[start : start + (5_000 if fill else 1)] = rng.integers(
                0, 256, (5_000 if fill else 1, 32, 32, 3), dtype=np.uint8
            )
        array.flush()
        del array


def rss_kb() -> dict[str, int]:
    """RssAnon and RssFile (kB) of this process, from /proc/self/status (Linux)."""
    out = {"RssAnon": 0, "RssFile": 0}
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            key = line.split(":")[0]
            if key in out:
                out[key] = int(line.split()[1])
    except OSError:
        pass
    return out


class NeverReleased(CifarC):
    """The reader keeping every mapped page for the whole stream (plain np.load mmap use)."""

    release_rows = sys.maxsize


def measure(
    variant: str, root: Path, corruptions: list[str], n: int | None, batch: int, schedule: str
) -> dict:
    """Run one variant in this process; return its measurements."""
    base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    base = rss_kb()  # after imports (torch alone is ~300 MB anonymous + ~250 MB of libraries)
    tracemalloc.start()
    peaks = {"RssAnon": 0, "RssFile": 0}
    start = time.perf_counter()
    images = 0
    if variant == "load all":
        arrays = [np.load(root / "CIFAR-10-C" / f"{c}.npy") for c in corruptions]
        images = sum(len(a) for a in arrays)
        peaks = rss_kb()
    else:
        cls = {"reader": CifarC, "never released": NeverReleased}[variant]
        ds = cls(root, corruptions=corruptions, severity=5, n_per_domain=n)
        plan = Stream(domains=schedule, batch_size=batch, seed=0).build(ds.domains, ds.labels)
        for b in plan.batches():
            x = fetch_images(ds, plan, b.domain_ids, b.indices).float().div_(255)
            images += len(x)
            now = rss_kb()
            peaks = {k: max(peaks[k], now[k]) for k in peaks}
    seconds = time.perf_counter() - start
    _, traced_peak = tracemalloc.get_traced_memory()
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "variant": variant,
        "images": images,
        "seconds": seconds,
        "tracemalloc_peak_mb": traced_peak / MB,
        "maxrss_growth_mb": (maxrss - base_maxrss) * 1024 / MB,
        "maxrss_total_mb": maxrss * 1024 / MB,
        "rss_anon_peak_mb": (peaks["RssAnon"] - base["RssAnon"]) * 1024 / MB,
        "rss_file_peak_mb": (peaks["RssFile"] - base["RssFile"]) * 1024 / MB,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corruptions", type=int, default=15, help="how many (canonical order)")
    parser.add_argument("--n-per-domain", type=int, default=None, help="default: all 10,000")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--domains", default="continual", help="stream schedule (continual)")
    parser.add_argument("--dir", help="where to write the files (default: a temporary folder)")
    parser.add_argument("--fill", action="store_true", help="write random bytes in every row")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # internal: run one variant
    args = parser.parse_args(argv)
    corruptions = list(COMMON_CORRUPTIONS[: args.corruptions])
    if args.child:
        result = measure(
            args.child,
            Path(args.dir),
            corruptions,
            args.n_per_domain,
            args.batch_size,
            args.domains,
        )
        print(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        write_files(root / "CIFAR-10-C", corruptions, args.fill)
        print(f"wrote {len(corruptions)} x 153.6 MB files in {time.perf_counter() - start:.1f} s")
        rows = []
        for variant in ("reader", *VARIANTS):  # the first run only warms the page cache
            command = [sys.executable, __file__, "--child", variant, "--dir", str(root)]
            command += [
                "--corruptions",
                str(args.corruptions),
                "--batch-size",
                str(args.batch_size),
                "--domains",
                args.domains,
            ]
            if args.n_per_domain:
                command += ["--n-per-domain", str(args.n_per_domain)]
            out = subprocess.run(command, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        rows = rows[1:]
    on_disk = len(corruptions) * 50_000 * 3072 / MB
    print(
        f"\n{args.domains} stream over {len(corruptions)} domains (severity 5), batch "
        f"{args.batch_size}; files on disk {on_disk:.1f} MB ({len(corruptions)} x 153.6 MB)\n"
    )
    header = (
        "variant",
        "rows read",
        "s",
        "tracemalloc peak MB",
        "ru_maxrss +MB",
        "peak RSS MB (whole process)",
        "RssAnon +MB",
        "RssFile +MB",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print(
            f"| {r['variant']} | {r['images']} | {r['seconds']:.1f} | "
            f"{r['tracemalloc_peak_mb']:.1f} | {r['maxrss_growth_mb']:.1f} | "
            f"{r['maxrss_total_mb']:.0f} | "
            f"{r['rss_anon_peak_mb']:.1f} | {r['rss_file_peak_mb']:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
