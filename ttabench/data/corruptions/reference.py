"""Per-image numpy/scipy/Pillow reference of the Hendrycks & Dietterich (ICLR 2019) corruptions.

Follows the recipes of "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (``make_cifar_c.py`` / ``make_imagenet_c.py``) image by image on HWC uint8 arrays,
with the libraries they used where those are still importable here (scipy.ndimage, Pillow) and
small numpy stand-ins for the rest (frost and spatter call OpenCV itself, see
``reference_cv.py``): OpenCV's float32 ``GaussianBlur`` of the disk kernel and
fixed-point ``warpAffine``, scikit-image's HSV conversion and ImageMagick's motion blur (all
checked against the real libraries when writing them; see the test module). Used by the
conformance tests and by ``scripts/bench_corruptions.py`` as the per-image baseline.

Random corruptions take their draws as arguments (``draws``) so the batched torch version can be
compared on identical noise; ``draws=None`` samples them from ``rng`` like the scripts do.
Needs scipy (a test extra), imported lazily.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np
from PIL import Image

Rng = np.random.Generator | None


def _nd() -> Any:
    import scipy.ndimage as ndi  # test/bench extra only

    return ndi


def _out(x: np.ndarray) -> np.ndarray:
    return np.uint8(np.clip(x, 0, 1) * 255)


def gaussian_noise(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    x = img / 255.0
    noise = rng.normal(size=x.shape, scale=c) if draws is None else draws
    return _out(x + noise)


def shot_noise(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    x = img / 255.0
    return _out(rng.poisson(x * c) / c)


def impulse_noise(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    # skimage.util.random_noise(mode='s&p'): per element Bernoulli(c), salt with prob 1/2
    x = (img / 255.0).copy()
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return _out(x)


def speckle_noise(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    x = img / 255.0
    return _out(x + x * rng.normal(size=x.shape, scale=c))


def cv_disk(radius: float, alias_blur: float) -> np.ndarray:
    """``disk()`` with OpenCV's float32 GaussianBlur written out (ksize 3/5, REFLECT_101)."""
    size = 8 if radius <= 8 else radius
    ksize = 3 if radius <= 8 else 5
    grid = np.arange(-size, size + 1)
    xx, yy = np.meshgrid(grid, grid)
    d = np.array((xx**2 + yy**2) <= radius**2, dtype=np.float32)
    d /= np.sum(d)
    half = (ksize - 1) * 0.5
    t = [
        np.float32(math.exp(-0.5 / (alias_blur * alias_blur) * (i - half) * (i - half)))
        for i in range(ksize)
    ]
    inv = 1.0 / sum(float(v) for v in t)
    taps = [np.float32(float(v) * inv) for v in t]
    r = ksize // 2
    for axis in (1, 0):  # rows (x) first, then columns
        p = np.pad(d, [(r, r) if a == axis else (0, 0) for a in range(2)], mode="reflect")
        n = d.shape[axis]
        sl = [np.take(p, np.arange(o, o + n), axis=axis) for o in range(ksize)]
        acc = sl[r] * taps[r]
        for j in range(1, r + 1):
            acc = acc + (sl[r - j] + sl[r + j]) * taps[r + j]
        d = acc
    return d


def defocus_blur(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    x = img / 255.0
    k = cv_disk(*c).astype(np.float64)
    chans = [_nd().correlate(x[..., d], k, mode="mirror") for d in range(3)]
    return _out(np.stack(chans, -1))


def _sk_gaussian(
    x: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = 4.0, channels: bool = True
) -> np.ndarray:
    sig = (sigma, sigma, 0) if channels else sigma
    return _nd().gaussian_filter(x, sig, mode=mode, truncate=truncate)


def gaussian_blur(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    return _out(_sk_gaussian(img / 255.0, c))


def glass_blur(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    """``draws``: (iterations, steps, 2) offsets (dx, dy) in [-d, d), in loop order."""
    sigma, d, iters = c
    h, w = img.shape[:2]
    x = np.uint8(_sk_gaussian(img / 255.0, sigma) * 255)
    steps = max(h - 2 * d, 0) * max(w - 2 * d, 0)
    offs = rng.integers(-d, d, size=(iters, steps, 2)) if draws is None else draws
    for i in range(iters):
        s = 0
        for hh in range(h - d, d, -1):
            for ww in range(w - d, d, -1):
                dx, dy = offs[i, s]
                s += 1
                hp, wp = hh + dy, ww + dx
                # the script's tuple "swap" of numpy views (really a copy), kept verbatim
                x[hh, ww], x[hp, wp] = x[hp, wp], x[hh, ww]
    return _out(_sk_gaussian(x / 255.0, sigma))


def magick_motion_blur(img: np.ndarray, radius: float, sigma: float, angle: float) -> np.ndarray:
    """ImageMagick 6 Q16 MotionBlurImage on an 8-bit image (H, W) or (H, W, C)."""
    width = int(2 * math.ceil(radius) + 1)
    k = [
        math.exp(-(i * i) / (2.0 * sigma * sigma)) / (math.sqrt(2 * math.pi) * sigma)
        for i in range(width)
    ]
    norm = 0.0
    for v in k:
        norm += v
    rad = math.pi * angle / 180.0
    px, py = width * math.sin(rad), width * math.cos(rad)
    hyp = math.hypot(px, py)
    h, w = img.shape[:2]
    acc = np.zeros(img.shape)
    for i in range(width):
        ox, oy = math.ceil(i * py / hyp - 0.5), math.ceil(i * px / hyp - 0.5)
        rows = np.clip(np.arange(h) + oy, 0, h - 1)
        cols = np.clip(np.arange(w) + ox, 0, w - 1)
        acc = acc + (k[i] / norm) * (img[rows][:, cols] * 257.0)
    q = np.clip(np.floor(acc + 0.5), 0, 65535)
    return np.uint8(q // 257)


def motion_blur(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    angle = rng.uniform(-45, 45) if draws is None else draws
    return magick_motion_blur(img, c[0], c[1], angle)


def clipped_zoom(img: np.ndarray, z: float) -> np.ndarray:
    h = img.shape[0]
    ch = int(np.ceil(h / z))
    top = (h - ch) // 2
    out = _nd().zoom(img[top : top + ch, top : top + ch], (z, z, 1), order=1)
    trim = (out.shape[0] - h) // 2
    return out[trim : trim + h, trim : trim + h]


def zoom_blur(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    zooms = np.arange(1, c[0], c[1])
    x = (img / 255.0).astype(np.float32)
    out = np.zeros_like(x)
    for z in zooms:
        out += clipped_zoom(x, z)
    return _out((x + out) / (len(zooms) + 1))


def plasma_fractal(mapsize: int, wibbledecay: float, uniform: Any) -> np.ndarray:
    """Diamond-square; ``uniform(low, high, shape)`` supplies the draws in the script's order."""
    m = np.zeros((mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled(a: np.ndarray) -> np.ndarray:
        return a / 4 + wibble * uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corner = m[0:mapsize:step, 0:mapsize:step]
        acc = corner + np.roll(corner, -1, axis=0)
        acc += np.roll(acc, -1, axis=1)
        m[half:mapsize:step, half:mapsize:step] = wibbled(acc)
        dr = m[half:mapsize:step, half:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        lt = (dr + np.roll(dr, 1, axis=0)) + (ul + np.roll(ul, -1, axis=1))
        m[0:mapsize:step, half:mapsize:step] = wibbled(lt)
        tt = (dr + np.roll(dr, 1, axis=1)) + (ul + np.roll(ul, -1, axis=0))
        m[half:mapsize:step, 0:mapsize:step] = wibbled(tt)
        step //= 2
        wibble /= wibbledecay
    m -= m.min()
    return m / m.max()


def fog(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    """``draws``: the uniform arrays consumed by ``plasma_fractal``, in draw order."""
    h, w = img.shape[:2]
    mapsize = 1 << max(max(h, w) - 1, 1).bit_length()
    it = iter(draws) if draws is not None else None
    uniform = rng.uniform if it is None else (lambda lo, hi, shape: next(it))
    x = img / 255.0
    max_val = x.max()
    x = x + c[0] * plasma_fractal(mapsize, c[1], uniform)[:h, :w][..., None]
    return _out(x * max_val / (max_val + c[0]))


def snow(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    """``draws``: (layer (H, W) ~ N(c0, c1), angle)."""
    h, w = img.shape[:2]
    if draws is None:
        draws = (rng.normal(size=(h, w), loc=c[0], scale=c[1]), rng.uniform(-135, -45))
    layer, angle = draws
    x = np.array(img, dtype=np.float32) / 255.0
    layer = clipped_zoom(layer[..., None], c[2])
    layer[layer < c[3]] = 0
    layer = (np.clip(layer.squeeze(-1), 0, 1) * 255).astype(np.uint8)
    layer = magick_motion_blur(layer, c[4], c[5], angle)[..., None] / 255.0
    gray = x[..., :1] * np.float32(0.299) + x[..., 1:2] * np.float32(0.587)
    gray = gray + x[..., 2:] * np.float32(0.114)
    x = c[6] * x + (1 - c[6]) * np.maximum(x, gray * 1.5 + 0.5)
    return _out(x + layer + np.rot90(layer, k=2))


def rgb2hsv(arr: np.ndarray) -> np.ndarray:
    out = np.empty_like(arr)
    v = arr.max(-1)
    delta = np.ptp(arr, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = delta / v
        s[delta == 0.0] = 0.0
        for ch, base, (a, b) in ((0, 0.0, (1, 2)), (1, 2.0, (2, 0)), (2, 4.0, (0, 1))):
            idx = arr[..., ch] == v
            out[idx, 0] = base + (arr[idx, a] - arr[idx, b]) / delta[idx]
    hue = (out[..., 0] / 6.0) % 1.0
    hue[delta == 0.0] = 0.0
    out[..., 0], out[..., 1], out[..., 2] = hue, s, v
    out[np.isnan(out)] = 0
    return out


def hsv2rgb(arr: np.ndarray) -> np.ndarray:
    hi = np.floor(arr[..., 0] * 6)
    f = arr[..., 0] * 6 - hi
    p = arr[..., 2] * (1 - arr[..., 1])
    q = arr[..., 2] * (1 - f * arr[..., 1])
    t = arr[..., 2] * (1 - (1 - f) * arr[..., 1])
    v = arr[..., 2]
    hi = np.stack([hi, hi, hi], axis=-1).astype(np.uint8) % 6
    opts = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.choose(hi, np.stack([np.stack(o, axis=-1) for o in opts]))


def brightness(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    x = rgb2hsv(img / 255.0)
    x[..., 2] = np.clip(x[..., 2] + c, 0, 1)
    return _out(hsv2rgb(x))


def saturate(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    x = rgb2hsv(img / 255.0)
    x[..., 1] = np.clip(x[..., 1] * c[0] + c[1], 0, 1)
    return _out(hsv2rgb(x))


def contrast(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    x = img / 255.0
    means = np.mean(x, axis=(0, 1), keepdims=True)
    return _out((x - means) * c + means)


def pixelate(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    h, w = img.shape[:2]
    x = Image.fromarray(img).resize((int(w * c), int(h * c)), Image.BOX)
    return np.asarray(x.resize((w, h), Image.BOX))


def jpeg_compression(img: np.ndarray, c: Any, rng: Rng = None, draws: Any = None) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=c)
    return np.asarray(Image.open(buf))


from .reference_cv import frost, spatter  # noqa: E402
from .reference_elastic import elastic_transform  # noqa: E402

#: name -> reference function ``f(img_hwc_uint8, params, rng, draws=None)``.
REFERENCES = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "speckle_noise": speckle_noise,
    "defocus_blur": defocus_blur,
    "gaussian_blur": gaussian_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
    "spatter": spatter,
    "saturate": saturate,
}
