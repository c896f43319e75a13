"""Per-image OpenCV/scipy reference of frost and spatter (Hendrycks & Dietterich, ICLR 2019).

Companion of ``reference.py`` for the two corruptions of "Benchmarking Neural Network Robustness
to Common Corruptions and Perturbations" whose recipes are OpenCV calls: this follows
``make_cifar_c.py`` / ``make_imagenet_c.py`` step by step with OpenCV itself (``cv2.imread``,
``cv2.resize``, ``cvtColor``, Canny, ...) and scipy's Gaussian (= ``skimage.filters.gaussian``),
on HWC uint8 arrays, so the batched torch versions can be checked against the original recipe
on the same draws. Frost reads the same texture files as ``frost.find_textures``. Needs
opencv-python-headless and scipy (test/bench extras), imported lazily.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .frost import find_textures


def _cv2() -> Any:
    import cv2  # test/bench extra only

    return cv2


def frost(
    img: np.ndarray, c: Any, rng: np.random.Generator | None = None, draws: Any = None
) -> np.ndarray:
    """``draws``: (texture index, crop row, crop col); ``None`` draws them from ``rng``."""
    cv2 = _cv2()
    h, w = img.shape[:2]
    idx = rng.integers(5) if draws is None else draws[0]
    texture = cv2.imread(str(find_textures().files[idx]))  # BGR, alpha dropped
    if c[2] != 1:
        texture = cv2.resize(texture, (0, 0), fx=c[2], fy=c[2])
    if draws is None:
        top, left = rng.integers(0, texture.shape[0] - h), rng.integers(0, texture.shape[1] - w)
    else:
        top, left = draws[1:]
    crop = texture[top : top + h, left : left + w][..., [2, 1, 0]]
    return np.uint8(np.clip(c[0] * np.array(img) + c[1] * crop, 0, 255))


def spatter(
    img: np.ndarray, c: Any, rng: np.random.Generator | None = None, draws: Any = None
) -> np.ndarray:
    """``draws``: the raw liquid layer (H, W) ~ N(c[0], c[1])."""
    cv2 = _cv2()
    import scipy.ndimage as ndi  # test/bench extra only

    x = np.array(img, dtype=np.float32) / 255.0
    layer = rng.normal(c[0], c[1], size=x.shape[:2]) if draws is None else draws
    layer = ndi.gaussian_filter(layer, c[2], mode="nearest", truncate=4.0)
    layer[layer < c[3]] = 0
    if c[5] == 0:
        with np.errstate(invalid="ignore", over="ignore"):
            layer = (layer * 255).astype(np.uint8)
        dist = 255 - cv2.Canny(layer, 50, 150)
        dist = cv2.distanceTransform(dist, cv2.DIST_L2, 5)
        _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
        dist = cv2.blur(dist, (3, 3)).astype(np.uint8)
        dist = cv2.equalizeHist(dist)
        kernel = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]])
        dist = cv2.filter2D(dist, cv2.CV_8U, kernel)
        dist = cv2.blur(dist, (3, 3)).astype(np.float32)
        m = cv2.cvtColor(layer * dist, cv2.COLOR_GRAY2BGRA)
        with np.errstate(invalid="ignore", divide="ignore"):
            m /= np.max(m, axis=(0, 1))
        m *= c[4]
        ones = np.ones_like(m[..., :1])
        color = np.concatenate([v / 255.0 * ones for v in (175, 238, 238)], axis=2)
        color = cv2.cvtColor(color, cv2.COLOR_BGR2BGRA)
        x = cv2.cvtColor(x, cv2.COLOR_BGR2BGRA)
        out = cv2.cvtColor(np.clip(x + m * color, 0, 1), cv2.COLOR_BGRA2BGR) * 255
    else:
        m = np.where(layer > c[3], 1, 0)
        m = ndi.gaussian_filter(m.astype(np.float32), c[4], mode="nearest", truncate=4.0)
        m[m < 0.8] = 0
        ones = np.ones_like(x[..., :1])
        color = np.concatenate([v / 255.0 * ones for v in (63, 42, 20)], axis=2)
        color *= m[..., np.newaxis]
        x *= 1 - m[..., np.newaxis]
        out = np.clip(x + color, 0, 1) * 255
    with np.errstate(invalid="ignore"):
        return np.uint8(out)  # NaN (no water at all) casts to 0 on x86, as in the script
