"""Procedural 10-class 32x32 RGB images: the offline embedded benchmark's clean data.

Why procedural: no CIFAR image can be shipped or downloaded here, and a seeded generator has no
licence question, any size, and CIFAR's geometry, so every CIFAR-10-C code path (corruption
tables, 32 px models, streams over 10 classes x 1,000 test images) runs unchanged.

Each class is a *shape or texture*, never a colour: foreground and background colours are drawn
uniformly per image, so mean colour carries (almost) no label information and a CNN must learn
contours and textures. Nuisances: rotation, scale, position, a shaded and noisy background, and
clutter strokes that can cross the object.

Determinism: images are generated in fixed chunks, each with its own ``SeedSequence([seed,
split, chunk])`` generator, so image i does not depend on how many images are generated.
``fingerprint()`` hashes this file's source and the split sizes: the shipped checkpoint records it,
so a change of the generator is caught instead of silently evaluating a model on different data.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

CLASSES = (
    "disc",
    "ring",
    "square",
    "triangle",
    "cross",
    "star",
    "crescent",
    "ellipse",
    "striped_disc",
    "checkered_square",
)
IMAGE_SIZE = 32
SPLITS = {"train": (0, 30_000), "test": (1, 10_000)}  # split -> (stream id, size)
CHUNK = 1000

_GRID = (np.arange(IMAGE_SIZE) + 0.5) / IMAGE_SIZE * 2.0 - 1.0  # pixel centres in [-1, 1]
# Bilinear interpolation matrix from 4 coarse cells to 32 pixels (cell centres at 4, 12, 20, 28).
_UPSAMPLE = np.clip(
    1 - np.abs((np.arange(IMAGE_SIZE)[:, None] + 0.5) / 8 - 0.5 - np.arange(4)), 0, 1
)
_UPSAMPLE /= _UPSAMPLE.sum(1, keepdims=True)


def fingerprint(seed: int = 0) -> str:
    """SHA-256 of the generator source, the split sizes and the seed."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(repr((sorted(SPLITS.items()), CHUNK, seed)).encode())
    return h.hexdigest()


def generate(split: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """All images of a split: uint8 (N, 3, 32, 32) and balanced int64 labels (N,)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {sorted(SPLITS)}")
    stream_id, n = SPLITS[split]
    order_rng = np.random.default_rng(np.random.SeedSequence([seed, stream_id]))
    labels = order_rng.permutation(np.arange(n) % len(CLASSES)).astype(np.int64)
    images = np.empty((n, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, n, CHUNK):
        rng = np.random.default_rng(np.random.SeedSequence([seed, stream_id, start // CHUNK]))
        images[start : start + CHUNK] = _render(labels[start : start + CHUNK], rng)
    return images, labels


def _render(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = len(labels)
    fg, bg = _colour_pairs(m, rng)
    canvas = _background(bg, rng)
    alpha = _object_alpha(labels, rng)[:, None]
    shade = 1.0 + 0.15 * _linear_ramp(m, rng)[:, None]
    canvas = canvas * (1 - alpha) + np.clip(fg[:, :, None, None] * shade, 0, 1) * alpha
    canvas = _clutter(canvas, rng)
    canvas += rng.normal(0.0, 0.02, canvas.shape)
    return np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)


def _colour_pairs(m: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform random RGB colours, resampled until foreground and background differ enough."""
    fg, bg = rng.uniform(size=(m, 3)), rng.uniform(size=(m, 3))
    for _ in range(100):
        close = np.linalg.norm(fg - bg, axis=1) < 0.45
        if not close.any():
            break
        fg[close] = rng.uniform(size=(close.sum(), 3))
    return fg, bg


def _linear_ramp(m: int, rng: np.random.Generator) -> np.ndarray:
    """A random-direction linear gradient in [-1, 1], shape (m, H, W)."""
    angle = rng.uniform(0, 2 * np.pi, m)
    gx, gy = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    return (gx * _GRID[None, None, :] + gy * _GRID[None, :, None]) / np.sqrt(2)


def _background(bg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Background colour with a gradient and smooth low-frequency blotches."""
    m = len(bg)
    ramp = 0.2 * _linear_ramp(m, rng)[:, None]
    coarse = rng.uniform(-0.15, 0.15, (m, 3, 4, 4))
    blotches = _UPSAMPLE @ coarse @ _UPSAMPLE.T  # bilinear 4x4 -> 32x32
    return np.clip(bg[:, :, None, None] + ramp + blotches, 0, 1)


def _object_alpha(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased coverage (m, H, W) of each image's class shape under a random pose."""
    m = len(labels)
    theta = rng.uniform(0, 2 * np.pi, m)[:, None, None]
    scale = rng.uniform(0.5, 0.85, m)[:, None, None]
    shift = rng.uniform(-0.22, 0.22, (m, 2))
    freq = rng.uniform(3.0, 5.0, m)[:, None, None]  # stripe / checker frequency (local units)
    x = _GRID[None, None, :] - shift[:, 0, None, None]
    y = _GRID[None, :, None] - shift[:, 1, None, None]
    u = (np.cos(theta) * x + np.sin(theta) * y) / scale
    v = (-np.sin(theta) * x + np.cos(theta) * y) / scale
    sdf = np.empty((m, IMAGE_SIZE, IMAGE_SIZE))
    for k, name in enumerate(CLASSES):
        sel = labels == k
        if sel.any():
            sdf[sel] = _SHAPES[name](u[sel], v[sel], freq[sel])
    pixel = (2.0 / IMAGE_SIZE) / scale  # one pixel in local units: soft edge of one pixel
    return np.clip(0.5 - sdf / pixel, 0.0, 1.0)


def _clutter(canvas: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to three thin random strokes in random colours, drawn over the whole image."""
    m = len(canvas)
    for _ in range(3):
        present = rng.uniform(size=m) < 0.5
        p0, p1 = rng.uniform(-1, 1, (m, 2)), rng.uniform(-1, 1, (m, 2))
        colour = rng.uniform(size=(m, 3))
        dist = _segment_distance(p0, p1)
        a = np.clip(1.0 - dist / (1.5 / IMAGE_SIZE), 0, 1) * present[:, None, None]
        canvas = canvas * (1 - a[:, None]) + colour[:, :, None, None] * a[:, None]
    return canvas


def _segment_distance(p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    x, y = _GRID[None, None, :], _GRID[None, :, None]
    d = p1 - p0
    t = (
        (x - p0[:, 0, None, None]) * d[:, 0, None, None]
        + (y - p0[:, 1, None, None]) * d[:, 1, None, None]
    ) / (d**2).sum(1)[:, None, None]
    t = np.clip(t, 0, 1)
    px = p0[:, 0, None, None] + t * d[:, 0, None, None]
    py = p0[:, 1, None, None] + t * d[:, 1, None, None]
    return np.hypot(x - px, y - py)


# Signed distance functions in local coordinates (negative inside), radius ~0.8.
def _box(u: np.ndarray, v: np.ndarray, a: float, b: float) -> np.ndarray:
    return np.maximum(np.abs(u) - a, np.abs(v) - b)


def _disc(u, v, f):
    return np.hypot(u, v) - 0.8


def _ring(u, v, f):
    return np.abs(np.hypot(u, v) - 0.62) - 0.2


def _square(u, v, f):
    return _box(u, v, 0.68, 0.68)


def _triangle(u, v, f):
    normals = [(np.cos(a), np.sin(a)) for a in (np.pi / 2, np.pi * 7 / 6, np.pi * 11 / 6)]
    return np.max([nx * u + ny * v for nx, ny in normals], axis=0) - 0.42


def _cross(u, v, f):
    return np.minimum(_box(u, v, 0.85, 0.25), _box(u, v, 0.25, 0.85))


def _star(u, v, f):
    return np.hypot(u, v) - (0.55 + 0.3 * np.cos(5 * np.arctan2(v, u)))


def _crescent(u, v, f):
    return np.maximum(np.hypot(u, v) - 0.8, 0.62 - np.hypot(u - 0.42, v))


def _ellipse(u, v, f):
    return (np.hypot(u / 0.9, v / 0.42) - 1.0) * 0.42


def _striped_disc(u, v, f):
    return np.maximum(_disc(u, v, f), -np.sin(np.pi * f * u) * 0.1)


def _checkered_square(u, v, f):
    return np.maximum(_square(u, v, f), -np.sin(np.pi * f * u) * np.sin(np.pi * f * v) * 0.1)


_SHAPES = {
    "disc": _disc,
    "ring": _ring,
    "square": _square,
    "triangle": _triangle,
    "cross": _cross,
    "star": _star,
    "crescent": _crescent,
    "ellipse": _ellipse,
    "striped_disc": _striped_disc,
    "checkered_square": _checkered_square,
}
