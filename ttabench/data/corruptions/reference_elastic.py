"""Per-image numpy/scipy reference of the elastic transform of Hendrycks & Dietterich (ICLR 2019).

Companion of ``reference.py`` for "Benchmarking Neural Network Robustness to Common Corruptions
and Perturbations": OpenCV's ``getAffineTransform`` and its fixed-point ``warpAffine`` (as in
OpenCV 2.x-4.10, which made the benchmark; checked bit-identical against opencv-python-headless
4.10.0.84) written out in numpy, then scikit-image's Gaussian (= scipy ``gaussian_filter``) and
scipy's ``map_coordinates`` themselves. Needs scipy (a test extra), imported lazily.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _out(x: np.ndarray) -> np.ndarray:
    return np.uint8(np.clip(x, 0, 1) * 255)


def cv_affine(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``cv2.getAffineTransform``: solve the 6 x 6 system in float64."""
    a, b = np.zeros((6, 6)), np.zeros(6)
    for i in range(3):
        a[2 * i, 0:3] = a[2 * i + 1, 3:6] = (src[i, 0], src[i, 1], 1.0)
        b[2 * i], b[2 * i + 1] = dst[i]
    return np.linalg.solve(a, b).reshape(2, 3)


def cv_warp_affine(img: np.ndarray, m: np.ndarray) -> np.ndarray:
    """OpenCV 3.x/4.x ``warpAffine`` (INTER_LINEAR, REFLECT_101) of float32 (H, W, C).

    Inverse map in 1/1024 fixed point, source positions rounded to 1/32 px, float32 weights.
    """
    h, w = img.shape[:2]
    m0, m1, m2, m3, m4, m5 = m.reshape(-1)
    d = m0 * m4 - m1 * m3
    d = 1.0 / d if d != 0 else 0.0
    a11, a22, i1, i3 = m4 * d, m0 * d, m1 * -d, m3 * -d
    m0, m1, m2, m3, m4, m5 = a11, i1, -a11 * m2 - i1 * m5, i3, a22, -i3 * m2 - a22 * m5
    xs, ys = np.arange(w), np.arange(h)
    adelta, bdelta = np.rint(m0 * xs * 1024).astype(int), np.rint(m3 * xs * 1024).astype(int)
    x0 = np.rint((m1 * ys + m2) * 1024).astype(int) + 16
    y0 = np.rint((m4 * ys + m5) * 1024).astype(int) + 16
    xq = (x0[:, None] + adelta[None, :]) >> 5
    yq = (y0[:, None] + bdelta[None, :]) >> 5
    sx, sy = xq >> 5, yq >> 5
    fx = (xq & 31).astype(np.float32) * np.float32(1 / 32)
    fy = (yq & 31).astype(np.float32) * np.float32(1 / 32)
    fx, fy = fx[..., None], fy[..., None]

    def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
        r = np.abs(r) if h == 1 else (r % (2 * h - 2))
        c = np.abs(c) if w == 1 else (c % (2 * w - 2))
        r = np.where(r >= h, 2 * h - 2 - r, r)
        c = np.where(c >= w, 2 * w - 2 - c, c)
        return img[r, c]

    one = np.float32(1)
    out = at(sy, sx) * ((one - fy) * (one - fx)) + at(sy, sx + 1) * ((one - fy) * fx)
    out = out + at(sy + 1, sx) * (fy * (one - fx))
    return out + at(sy + 1, sx + 1) * (fy * fx)


def elastic_transform(
    img: np.ndarray, c: Any, rng: np.random.Generator | None = None, draws: Any = None
) -> np.ndarray:
    """``draws``: (jitter (3, 2) float32, field_x (H, W), field_y (H, W))."""
    scale, (af, sf, jf) = c
    alpha, sigma, jit = scale * af, scale * sf, scale * jf
    import scipy.ndimage as ndi  # test/bench extra only

    image = np.array(img, dtype=np.float32) / 255.0
    h, w = image.shape[:2]
    centre = np.float32((h, w)) // 2
    size = min(h, w) // 3
    pts1 = np.float32([centre + size, [centre[0] + size, centre[1] - size], centre - size])
    if draws is None:
        draws = (
            rng.uniform(-jit, jit, size=(3, 2)).astype(np.float32),
            rng.uniform(-1, 1, size=(h, w)),
            rng.uniform(-1, 1, size=(h, w)),
        )
    jitter, field_x, field_y = draws
    image = cv_warp_affine(image, cv_affine(pts1, pts1 + jitter))
    smooth = lambda f: ndi.gaussian_filter(f, sigma, mode="reflect", truncate=3)  # noqa: E731
    dx = (smooth(field_x) * alpha).astype(np.float32)[..., None]
    dy = (smooth(field_y) * alpha).astype(np.float32)[..., None]
    x, y, z = np.meshgrid(np.arange(w), np.arange(h), np.arange(3))
    idx = (y + dy).reshape(-1, 1), (x + dx).reshape(-1, 1), z.reshape(-1, 1)
    out = ndi.map_coordinates(image, idx, order=1, mode="reflect").reshape(image.shape)
    return _out(out)
