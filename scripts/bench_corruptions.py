"""Fidelity and throughput of the batched torch corruptions vs the per-image original recipes.

Corruptions of Hendrycks & Dietterich, ICLR 2019 ("Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations"). Two markdown tables:

* ``deviation``: torch vs the per-image numpy/scipy/Pillow/OpenCV reference
  (``ttabench.data.corruptions.reference``) on the same images and the same random draws
  (``conformance.compare_with_reference``), per corruption and severity: max absolute
  difference in grey levels and the fraction of differing values. The four noises share no
  draws (torch and numpy RNG streams differ), so their cell is a two-sample Kolmogorov-Smirnov
  test between the torch outputs (per-sample generators) and the reference's (numpy) on the
  same images: distance D and p-value.
* ``throughput``: images/s of one batched ``corrupt`` call (per-sample generators, created
  inside the timing, as the datasets do) vs the reference run image by image (what the scripts
  do), at one severity, and the ratio (medians of ``--repeat`` timings); the last row is one
  image through every corruption (sum of the per-image times).

Needs scipy and, for frost/spatter, opencv-python-headless plus the frost textures (skipped
with a note otherwise).

    python scripts/bench_corruptions.py deviation --profile cifar
    python scripts/bench_corruptions.py throughput --profile cifar --batch 256 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from scipy import stats

from ttabench.data.corruptions import (
    TABLES,
    available_corruptions,
    corrupt,
    sample_generators,
    unavailable_reason,
)
from ttabench.data.corruptions.conformance import compare_with_reference
from ttabench.data.corruptions.reference import REFERENCES

SIZES = {"cifar": 32, "imagenet": 224}
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")


def synthetic_images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour fields with sharp edges and texture, uint8 (n, 3, size, size)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic")
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    centre = torch.rand(n, 2, 1, 1, generator=g) - 0.5
    disc = ((yy - centre[:, :1]) ** 2 + (xx - centre[:, 1:]) ** 2 < 0.2).float()
    texture = 0.15 * torch.sin(20 * xx) * torch.sin(20 * yy)
    img = smooth * (1 - disc) + torch.rand(n, 3, 1, 1, generator=g) * disc + texture
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def runnable(names: list[str] | None) -> tuple[list[str], list[str]]:
    """(names that can run here, notes on those skipped)."""
    out, notes = [], []
    for name in names or available_corruptions():
        reason = unavailable_reason(name)
        (notes.append(f"{name}: skipped ({reason})") if reason else out.append(name))
    return out, notes


def deviation_cell(name: str, imgs: np.ndarray, profile: str, severity: int) -> str:
    if name in NOISES:
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
        gens = sample_generators(0, name, severity, range(len(imgs)))
        ours = corrupt(x, name, severity, gens, profile).permute(0, 2, 3, 1).numpy()
        rng = np.random.default_rng(severity)
        params = TABLES[name][profile][severity - 1]
        ref = np.stack([REFERENCES[name](im, params, rng) for im in imgs])
        test = stats.ks_2samp(ours.ravel(), ref.ravel())
        return f"KS D={test.statistic:.4f} (p={test.pvalue:.2f})"
    ours, ref = compare_with_reference(name, imgs, profile, severity)
    diff = np.abs(ours.astype(int) - ref.astype(int))
    return f"{diff.max()} ({100 * (diff > 0).mean():.3f} %)"


def deviation_table(names: list[str], profile: str, n: int) -> list[str]:
    imgs = synthetic_images(n, SIZES[profile], seed=1).permute(0, 2, 3, 1).numpy().copy()
    lines = [
        f"| {profile} ({n} images, {SIZES[profile]} px) | sev 1 | sev 2 | sev 3 | sev 4 | sev 5 |",
        "|---|---|---|---|---|---|",
    ]
    for name in names:
        cells = [deviation_cell(name, imgs, profile, s) for s in range(1, 6)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def median_rate(run: Callable[[], None], images: int, repeat: int) -> float:
    """Images/s of the median of ``repeat`` timed calls of ``run`` (after one warm-up call).

    The median, not the mean, so one call slowed by another process does not decide a ratio.
    """
    run()  # warm-up (lazy imports, kernel, texture and filter caches)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return images / statistics.median(times)


def bench_torch(x: torch.Tensor, name: str, severity: int, profile: str, repeat: int) -> float:
    def once() -> None:
        gens = sample_generators(0, name, severity, range(len(x)))
        corrupt(x, name, severity, gens, profile)
        _sync(x.device)

    return median_rate(once, x.shape[0], repeat)


def bench_reference(
    images: np.ndarray, name: str, severity: int, profile: str, repeat: int
) -> float:
    params = TABLES[name][profile][severity - 1]
    rng = np.random.default_rng(0)

    def once() -> None:
        for img in images:
            REFERENCES[name](img, params, rng)

    return median_rate(once, len(images), repeat)


def rate(images_per_s: float) -> str:
    """Whole images/s, one decimal below 100 (ImageNet's slow corruptions)."""
    return f"{images_per_s:.0f}" if images_per_s >= 100 else f"{images_per_s:.1f}"


def throughput_table(names: list[str], args: argparse.Namespace) -> list[str]:
    cifar = args.profile == "cifar"
    batch = args.batch or (256 if cifar else 32)
    n_ref = min(args.ref_images or (64 if cifar else 4), batch)
    device = torch.device(args.device)
    x = synthetic_images(batch, SIZES[args.profile])
    ref_images = x[:n_ref].permute(0, 2, 3, 1).numpy().copy()
    x = x.to(device)
    lines = [
        f"profile={args.profile} ({SIZES[args.profile]} px), severity {args.severity}, torch on "
        f"{device} with {torch.get_num_threads()} thread(s), batch {batch}, per-sample "
        f"generators; reference: {n_ref} images one by one",
        "",
        "| corruption | torch batched img/s | reference per-image img/s | speed-up |",
        "|---|---:|---:|---:|",
    ]
    fast_s = slow_s = 0.0  # seconds per image through every corruption
    for name in names:
        fast = bench_torch(x, name, args.severity, args.profile, args.repeat)
        slow = bench_reference(ref_images, name, args.severity, args.profile, args.repeat)
        fast_s, slow_s = fast_s + 1 / fast, slow_s + 1 / slow
        lines.append(f"| {name} | {rate(fast)} | {rate(slow)} | {fast / slow:.1f}x |")
    lines.append(
        f"| **all {len(names)}, one image through each** | {rate(1 / fast_s)} | "
        f"{rate(1 / slow_s)} | **{slow_s / fast_s:.1f}x** |"
    )
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("table", choices=("deviation", "throughput"))
    parser.add_argument("--profile", default="cifar", choices=sorted(SIZES))
    parser.add_argument("--names", nargs="*", default=None, help="default: all implemented")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--images", type=int, default=None, help="deviation: 64 / 4 images")
    parser.add_argument("--device", default="cpu", help="throughput: torch device")
    parser.add_argument("--batch", type=int, default=None, help="throughput: 256 / 32")
    parser.add_argument("--ref-images", type=int, default=None, help="throughput: 64 / 4")
    parser.add_argument("--severity", type=int, default=3, help="throughput severity")
    parser.add_argument("--repeat", type=int, default=5, help="timed calls; the median counts")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names, notes = runnable(args.names)
    if args.table == "deviation":
        n = args.images or (64 if args.profile == "cifar" else 4)
        lines = deviation_table(names, args.profile, n)
    else:
        lines = throughput_table(names, args)
    print("\n".join(lines + [f"\n{note}" for note in notes]))


if __name__ == "__main__":
    main()
