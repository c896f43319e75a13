"""Blur corruptions of Hendrycks & Dietterich (ICLR 2019), batched in torch.

Rebuilds defocus, Gaussian, glass, motion and zoom blur of "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations" (``make_cifar_c.py``, ``make_imagenet_c.py``)
so that, given the same random draws, the uint8 output equals the original's up to float
round-off (see each function for the library behaviour it replays).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from .ops import (
    RandomSource,
    clipped_zoom,
    gaussian_filter,
    magick_motion_blur,
    pad2d,
    per_chunk,
    to_uint8,
    to_unit,
    zoom_geometry,
)
from .registry import register


@lru_cache(maxsize=32)
def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """The scripts' ``disk()``: an aliased float32 disk smoothed by ``cv2.GaussianBlur``.

    The disk lives on a 17 x 17 grid (radius <= 8) or a ``(2r+1)^2`` grid, is normalised in
    float32 and blurred with a 3 x 3 (5 x 5 for r > 8) Gaussian of sigma ``alias_blur``. OpenCV
    does that in float32 with BORDER_REFLECT_101 (so a disk touching the grid border, r = 8 and
    10 of the ImageNet table, gains 1.1-1.3 % mass: the originals brighten slightly), with taps
    ``float32(exp(-x^2 / (2 sigma^2)))`` normalised by their float64 sum and a symmetric
    row-then-column pass, replayed here in float32 (bit-identical to OpenCV for every radius of
    the CIFAR table; OpenCV builds with FMA differ by 1 float32 ulp on some taps for r >= 4).
    """
    if radius <= 8:
        grid, n = np.arange(-8, 8 + 1), 3
    else:
        grid, n = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    disk = (xx**2 + yy**2 <= radius**2).astype(np.float32)
    disk /= np.sum(disk)
    pos = np.arange(n) - (n - 1) * 0.5
    taps = np.exp(-0.5 / (alias_blur * alias_blur) * pos * pos).astype(np.float32)
    taps = (taps.astype(np.float64) * (1.0 / sum(float(t) for t in taps))).astype(np.float32)
    r = n // 2

    def smooth(a: np.ndarray, axis: int) -> np.ndarray:
        m = a.shape[axis]
        padded = np.pad(a, [(r, r) if ax == axis else (0, 0) for ax in range(2)], mode="reflect")
        take = lambda o: np.take(padded, np.arange(o, o + m), axis=axis)  # noqa: E731
        acc = take(r) * taps[r]
        for j in range(1, r + 1):
            acc = acc + (take(r - j) + take(r + j)) * taps[r + j]
        return acc

    return smooth(smooth(disk, 1), 0)


def fft_size(n: int) -> int:
    """The smallest ``2^a 3^b 5^c >= n``: pocketfft is 2-3x faster there than on, e.g., 236."""
    while True:
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            return n
        n += 1


@lru_cache(maxsize=32)
def trimmed_disk_kernel(param: tuple) -> np.ndarray:
    """``disk_kernel(*param)`` in float64 without its all-zero outer rings (read-only).

    The 17 x 17 grid is mostly zeros for small radii; zero taps add exact zeros, so dropping them
    leaves every sum unchanged - up to 12x less work on CIFAR.
    """
    kernel = disk_kernel(*param).astype(np.float64)
    while kernel.shape[0] > 1 and not kernel[[0, -1], :].any() and not kernel[:, [0, -1]].any():
        kernel = kernel[1:-1, 1:-1]
    kernel.setflags(write=False)
    return kernel


@lru_cache(maxsize=32)
def _kernel_spectrum(param: tuple, size: tuple[int, int], device: torch.device) -> torch.Tensor:
    """rfft2 of the flipped ``trimmed_disk_kernel(param)`` at ``size``."""
    kernel = trimmed_disk_kernel(param)[::-1, ::-1].copy()
    return torch.fft.rfft2(torch.from_numpy(kernel).to(device), s=size)


@register("defocus_blur", random=False)
def defocus_blur(images: torch.Tensor, param: tuple, rng: RandomSource) -> torch.Tensor:
    """Disk blur: ``cv2.filter2D(x, -1, disk(radius, alias_blur))`` per channel.

    filter2D is a correlation with BORDER_REFLECT_101 (``mirror`` extension). OpenCV evaluates
    kernels this large via a DFT in float64, so a handful of pixels whose exact value sits on an
    integer may truncate one grey level differently (<= 1 LSB).
    """
    x = to_unit(images)
    kernel = trimmed_disk_kernel(param)
    r = kernel.shape[0] // 2
    padded = pad2d(x, r, "mirror")
    h, w = x.shape[-2:]
    if kernel.size >= 50:
        # OpenCV's filter2D itself switches to a DFT for float64 kernels of >= 50 taps (all
        # of these: the original disk grid is 17 x 17), so an FFT is as faithful as a direct
        # sum (both within float64 round-off) and ~20x faster on 224 px images. Zero-padded
        # to a 5-smooth size (as OpenCV's getOptimalDFTSize), outputs from 2r on do not wrap.
        size = (fft_size(h + 2 * r), fft_size(w + 2 * r))
        kf = _kernel_spectrum(param, size, x.device)
        out = torch.fft.irfft2(torch.fft.rfft2(padded, s=size) * kf, s=size)
        out = out[..., 2 * r : 2 * r + h, 2 * r : 2 * r + w]
    else:
        # Shifted multiply-adds: ~7x faster than float64 conv2d (im2col) on the CPU.
        out = torch.zeros_like(x)
        for (i, j), k in np.ndenumerate(kernel):
            if k != 0.0:
                out += padded[..., i : i + h, j : j + w] * float(k)
    return to_uint8(out)


@register("gaussian_blur", random=False)
def gaussian_blur(images: torch.Tensor, sigma: float, rng: RandomSource) -> torch.Tensor:
    """``skimage.filters.gaussian(x, sigma, channel_axis=-1)``: mode 'nearest', truncate 4."""
    return to_uint8(gaussian_filter(to_unit(images), sigma))


@lru_cache(maxsize=16)
def glass_waves(h: int, w: int, delta: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[int]]:
    """The shuffle loop's steps grouped into independent waves, and a storage order for them.

    Step ``(row r, column c)`` of the loop (counted in visiting order) writes its own pixel and
    reads one at most ``delta`` rows and columns away, so two steps can interact only if they
    are at most ``delta`` apart in both directions. Giving step ``(r, c)`` the wave number
    ``(delta + 1) * r + c`` keeps every interacting pair in loop order, and the steps of one
    wave are ``>= delta + 1`` columns apart, so they do not interact: running the waves in order,
    each as one vectorised assignment, reproduces the sequential loop exactly with ~``delta + 1``
    waves per row instead of one step per pixel.

    Returns ``order`` (the steps, in visiting order numbers, sorted by wave), ``stored`` (the
    pixel kept at each storage position: the steps' targets in wave order, then the unvisited
    border), ``position`` (its inverse) and where each wave starts in ``order``, plus the end.
    Storing pixels in wave order makes every wave's writes one contiguous slice.
    """
    rows = np.arange(h - delta, delta, -1)
    cols = np.arange(w - delta, delta, -1)
    targets = (rows[:, None] * w + cols[None, :]).reshape(-1)  # visiting order
    r, c = np.divmod(np.arange(targets.size), max(cols.size, 1))
    wave = (delta + 1) * r + c
    order = np.argsort(wave, kind="stable")
    bounds = [0, *(np.flatnonzero(np.diff(wave[order])) + 1).tolist(), order.size]
    stored = np.concatenate([targets[order], np.setdiff1d(np.arange(h * w), targets)])
    position = np.empty(h * w, dtype=np.int64)
    position[stored] = np.arange(h * w)
    for cached in (order, stored, position):  # shared by every call
        cached.setflags(write=False)
    return order, stored, position, bounds


def glass_shuffle_index(h: int, w: int, delta: int, offsets: np.ndarray) -> np.ndarray:
    """Pixel index map of the scripts' "locally shuffle pixels" loop, for a batch.

    ``offsets`` (iterations, steps, B, 2) holds each step's ``(dx, dy)`` in ``[-delta, delta)``
    (``np.random.randint(-d, d)`` never yields ``+d``); steps visit ``h`` and ``w`` from
    ``size - delta`` down to ``delta + 1`` (the loop's ``range(size - d, d, -1)``).
    The loop's tuple "swap" ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` acts on numpy *views*, so
    it is really a copy: ``x[h, w]`` takes the value of ``x[h', w']`` and ``x[h', w']`` keeps its
    own. Steps can read pixels already overwritten, so order matters; the loop runs on integer
    indices on the CPU, vectorised over the batch and over the independent steps of each wave
    (``glass_waves``), and the map is applied on the device in one gather. Returns (B, H*W)
    source indices.
    """
    return glass_index(h, w, delta, torch.as_tensor(offsets).permute(2, 0, 1, 3))


def index_dtype(size: int) -> type:
    """int32 for index arrays below 2**31 entries (half the memory traffic: ~1.2x), else int64."""
    return np.int32 if size < 2**31 else np.int64


def glass_index(h: int, w: int, delta: int, offsets: torch.Tensor) -> np.ndarray:
    """``glass_shuffle_index`` of batch-first CPU offsets (B, iterations, steps, 2)."""
    b = offsets.shape[0]
    order, stored, position, bounds = glass_waves(h, w, delta)
    # Each step's flat read offset dy * w + dx, as (iterations, steps in wave order, B); int16
    # while |dy * w + dx| <= delta * (w + 1) fits (half the traffic), and numpy's transposing
    # copy, ~4x faster than torch's here.
    narrow = np.int16 if delta * (w + 1) < 2**15 else np.int32
    o = offsets.numpy().astype(narrow, copy=False)
    shifts = o[..., 1] * narrow(w) + o[..., 0]
    shifts = np.ascontiguousarray(shifts.transpose(1, 2, 0))[:, order]
    dtype = index_dtype(h * w * b)
    stored_d, position_d = stored.astype(dtype), position.astype(dtype)
    batch = np.arange(b, dtype=dtype)
    # index[p * B + image]: the pixel that storage position p of that image reads from.
    index = np.repeat(stored_d, b)
    for step_shifts in shifts:
        src = stored_d[: len(order), None] + step_shifts.astype(dtype, copy=False)  # read pixels
        read = (position_d[src] * dtype(b) + batch).reshape(-1)
        for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
            index[lo * b : hi * b] = index[read[lo * b : hi * b]]
    return np.ascontiguousarray(index.reshape(h * w, b)[position].T)


def glass_blend(images: torch.Tensor, sigma: float, index: torch.Tensor) -> torch.Tensor:
    """Gaussian blur, truncate to uint8, move pixels by ``index`` (B, H*W), blur again."""
    b, c, h, w = images.shape
    x = (gaussian_filter(to_unit(images), sigma) * 255).clamp_(0, 255).floor_()
    index = index.to(x.device, torch.int64)  # int32 indices need torch >= 2.8
    x = x.reshape(b, c, h * w).gather(2, index[:, None, :].expand(b, c, h * w))
    return to_uint8(gaussian_filter(x.reshape(b, c, h, w) / 255.0, sigma))


def glass_apply(images: torch.Tensor, param: tuple, offsets: torch.Tensor) -> torch.Tensor:
    """``glass_blend`` with the shuffle of ``offsets`` (iterations, steps, B, 2)."""
    sigma, delta, _ = param
    h, w = images.shape[-2:]
    index = glass_shuffle_index(h, w, delta, offsets.cpu().numpy())
    return glass_blend(images, sigma, torch.from_numpy(index))


@register("glass_blur", random=True, whole_batch=True)
def glass_blur(images: torch.Tensor, param: tuple, rng: RandomSource) -> torch.Tensor:
    """Glass: local pixel shuffling between two Gaussian blurs (see ``glass_shuffle_index``).

    All of a sample's step offsets are drawn up front, batch first (per-sample seeding). The
    index loop runs once per call (its cost is per wave, not per image: ``whole_batch``); the
    blurs run in cache-sized chunks.
    """
    sigma, delta, iterations = param
    b, _, h, w = images.shape
    steps = max(h - 2 * delta, 0) * max(w - 2 * delta, 0)
    offsets = rng.integers((b, iterations, steps, 2), -delta, delta, torch.int16).cpu()
    index = torch.from_numpy(glass_index(h, w, delta, offsets))
    return per_chunk(images, lambda rows: glass_blend(images[rows], sigma, index[rows]))


@register("motion_blur", random=True)
def motion_blur(images: torch.Tensor, param: tuple, rng: RandomSource) -> torch.Tensor:
    """ImageMagick ``motion_blur(radius, sigma, angle ~ U(-45, 45))`` on the uint8 image."""
    radius, sigma = param
    angles = rng.uniform((images.shape[0],), -45.0, 45.0)
    return magick_motion_blur(images, radius, sigma, angles)


def zoom_factors(end: float, step: float) -> np.ndarray:
    """``np.arange(1, end, step)`` in float64, as the scripts (CIFAR sev 1-2 include ``end``)."""
    return np.arange(1, end, step)


@register("zoom_blur", random=False)
def zoom_blur(images: torch.Tensor, param: tuple, rng: RandomSource) -> torch.Tensor:
    """Mean of the image and its ``clipped_zoom`` at each factor, in float32 like the script.

    The script casts ``x / 255`` to float32, so scipy's zoom returns float32 and the running sum,
    the mean and the final ``* 255`` are float32; each zoom is computed in float64 and rounded
    to float32 exactly as scipy does.
    """
    factors = zoom_factors(*param)
    # The script divides in float64 and then casts; for the 256 grey levels that equals the
    # float32 division (checked), so the float32 input is bit-identical.
    x = to_unit(images, torch.float32)
    out = torch.zeros_like(x)
    geometry, zoomed = None, None
    for z in factors.tolist():
        # Consecutive factors with the same crop and size give the same zoom: computed once,
        # still added once per factor (the script's float32 running sum).
        if (shape := zoom_geometry(*x.shape[-2:], z)) != geometry:
            geometry, zoomed = shape, clipped_zoom(x, z)
        out += zoomed
    return to_uint8((x + out) / (len(factors) + 1))
