"""Shapes the embedded model never saw: the embedded benchmark's outlier classes.

Drawn by the generator of :mod:`ttabench.data.synthetic` (its colours, shaded and blotched
backgrounds, clutter strokes, pose ranges and pixel noise), only the object differs: five shapes
that are none of its ten classes. ``synthetic.py`` itself is not edited: its source is
fingerprinted by the shipped checkpoints, so the pose sampling is repeated here.

Determinism as in ``synthetic``: fixed chunks, each with its own ``SeedSequence([seed, 2,
chunk])`` generator (stream id 2: neither the train split's 0 nor the test split's 1).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from ttabench.data import synthetic
from ttabench.data.synthetic import _GRID, CHUNK, IMAGE_SIZE

SHAPES = ("hourglass", "three_dots", "arrow", "heart", "wave")
SIZE = 10_000  # as many as the test split: ratio 0.5 of a full domain still fits
_STREAM_ID = 2


def fingerprint(seed: int = 0) -> str:
    """SHA-256 of this file, the synthetic generator's fingerprint and the seed."""
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(synthetic.fingerprint(seed).encode())
    h.update(repr((SIZE, CHUNK, seed)).encode())
    return h.hexdigest()


def generate(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images (SIZE, 3, 32, 32) of the unseen shapes, and their labels (all -1)."""
    shapes = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_ID])).integers(
        0, len(SHAPES), SIZE
    )
    images = np.empty((SIZE, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    for start in range(0, SIZE, CHUNK):
        rng = np.random.default_rng(np.random.SeedSequence([seed, _STREAM_ID, start // CHUNK]))
        images[start : start + CHUNK] = _render(shapes[start : start + CHUNK], rng)
    return images, np.full(SIZE, -1, dtype=np.int64)


def _render(shapes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    m = len(shapes)
    fg, bg = synthetic._colour_pairs(m, rng)
    canvas = synthetic._background(bg, rng)
    alpha = _object_alpha(shapes, rng)[:, None]
    shade = 1.0 + 0.15 * synthetic._linear_ramp(m, rng)[:, None]
    canvas = canvas * (1 - alpha) + np.clip(fg[:, :, None, None] * shade, 0, 1) * alpha
    canvas = synthetic._clutter(canvas, rng)
    canvas += rng.normal(0.0, 0.02, canvas.shape)
    return np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)


def _object_alpha(shapes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Coverage of each image's shape under synthetic's pose distribution."""
    m = len(shapes)
    theta = rng.uniform(0, 2 * np.pi, m)[:, None, None]
    scale = rng.uniform(0.5, 0.85, m)[:, None, None]
    shift = rng.uniform(-0.22, 0.22, (m, 2))
    x = _GRID[None, None, :] - shift[:, 0, None, None]
    y = _GRID[None, :, None] - shift[:, 1, None, None]
    u = (np.cos(theta) * x + np.sin(theta) * y) / scale
    v = (-np.sin(theta) * x + np.cos(theta) * y) / scale
    sdf = np.empty((m, IMAGE_SIZE, IMAGE_SIZE))
    for k, name in enumerate(SHAPES):
        sel = shapes == k
        if sel.any():
            sdf[sel] = _SDF[name](u[sel], v[sel])
    pixel = (2.0 / IMAGE_SIZE) / scale
    return np.clip(0.5 - sdf / pixel, 0.0, 1.0)


def _hourglass(u, v):
    up = np.maximum(np.abs(u) * 1.6 - v, v - 0.8)  # a triangle standing on its tip
    down = np.maximum(np.abs(u) * 1.6 + v, -v - 0.8)
    return np.minimum(up, down) * 0.5


def _three_dots(u, v):
    centres = [(0.0, 0.5), (-0.45, -0.3), (0.45, -0.3)]
    return np.min([np.hypot(u - cx, v - cy) - 0.27 for cx, cy in centres], axis=0)


def _arrow(u, v):
    shaft = np.maximum(np.abs(u + 0.2) - 0.55, np.abs(v) - 0.14)
    head = np.maximum(np.maximum(u - 0.85, -(u - 0.25)), np.abs(v) - (0.85 - u) * 0.75)
    return np.minimum(shaft, head)


def _heart(u, v):
    lobes = np.minimum(np.hypot(u - 0.32, v - 0.25), np.hypot(u + 0.32, v - 0.25)) - 0.38
    tip = np.maximum(np.abs(u) * 1.1 + v * 0.9 - 0.55, -v - 0.85)
    return np.minimum(lobes, tip * 0.7)


def _wave(u, v):
    band = np.abs(v - 0.3 * np.sin(3.5 * u)) - 0.16
    return np.maximum(band, np.abs(u) - 0.85)


_SDF = {
    "hourglass": _hourglass,
    "three_dots": _three_dots,
    "arrow": _arrow,
    "heart": _heart,
    "wave": _wave,
}
