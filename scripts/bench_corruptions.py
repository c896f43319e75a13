"""Throughput of the batched torch corruptions vs the per-image numpy/scipy/Pillow reference.

Corruptions of Hendrycks & Dietterich, ICLR 2019 ("Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations"). The torch side corrupts one batch per call
(``ttabench.data.corruptions.corrupt``); the reference side runs the per-image recipe of
``ttabench.data.corruptions.reference`` (what the original scripts do, one image at a time) on
the first ``--ref-images`` images of the same batch. Needs scipy (test extra).

    python scripts/bench_corruptions.py --device cpu --profile cifar --batch 256
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ttabench.data.corruptions import TABLES, available_corruptions, corrupt
from ttabench.data.corruptions.reference import REFERENCES

SIZES = {"cifar": 32, "imagenet": 224}


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


def bench_torch(x: torch.Tensor, name: str, severity: int, profile: str, repeat: int) -> float:
    gen = torch.Generator().manual_seed(0)
    corrupt(x, name, severity, gen, profile)  # warm-up (kernels, caches)
    _sync(x.device)
    start = time.perf_counter()
    for _ in range(repeat):
        corrupt(x, name, severity, gen, profile)
    _sync(x.device)
    return repeat * x.shape[0] / (time.perf_counter() - start)


def bench_reference(images: np.ndarray, name: str, severity: int, profile: str) -> float:
    params = TABLES[name][profile][severity - 1]
    rng = np.random.default_rng(0)
    REFERENCES[name](images[0], params, rng)  # warm-up (lazy scipy import, caches)
    start = time.perf_counter()
    for img in images:
        REFERENCES[name](img, params, rng)
    return len(images) / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="torch device for the batched side")
    parser.add_argument("--profile", default="cifar", choices=sorted(SIZES))
    parser.add_argument("--batch", type=int, default=None, help="256 (cifar) / 32 (imagenet)")
    parser.add_argument("--ref-images", type=int, default=None, help="64 (cifar) / 4 (imagenet)")
    parser.add_argument("--severity", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--names", nargs="*", default=None, help="default: all implemented")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    cifar = args.profile == "cifar"
    batch = args.batch or (256 if cifar else 32)
    n_ref = min(args.ref_images or (64 if cifar else 4), batch)
    device = torch.device(args.device)
    x = synthetic_images(batch, SIZES[args.profile])
    ref_images = x[:n_ref].permute(0, 2, 3, 1).numpy().copy()
    x = x.to(device)

    print(
        f"profile={args.profile} size={SIZES[args.profile]} severity={args.severity} "
        f"device={device} batch={batch} reference images={n_ref} "
        f"torch threads={torch.get_num_threads()}"
    )
    header = f"{'corruption':<18} {'torch img/s':>12} {'reference img/s':>16} {'speed-up':>9}"
    print(header)
    print("-" * len(header))
    for name in args.names or available_corruptions():
        fast = bench_torch(x, name, args.severity, args.profile, args.repeat)
        slow = bench_reference(ref_images, name, args.severity, args.profile)
        print(f"{name:<18} {fast:>12.0f} {slow:>16.0f} {fast / slow:>8.1f}x")


if __name__ == "__main__":
    main()
