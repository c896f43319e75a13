"""Digital corruptions of Hendrycks & Dietterich (ICLR 2019): contrast, saturate, pixelate, JPEG.

From "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations"
(``make_cifar_c.py``, ``make_imagenet_c.py``). pixelate and jpeg_compression return PIL images
in the originals (exact uint8, no truncation step); pixelate is rebuilt bit-exactly from
Pillow's fixed-point BOX resampler, JPEG is Pillow itself. elastic_transform lives in
``elastic.py``, spatter (grouped with the weather ones) in ``spatter.py``.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from .color import hsv_to_rgb, rgb_to_hsv
from .ops import RandomSource, to_uint8, to_unit
from .registry import register

_PRECISION_BITS = 32 - 8 - 2  # Pillow's Resample.c fixed point for 8-bit images


@register("contrast", random=False)
def contrast(images: torch.Tensor, factor: float, rng: RandomSource) -> torch.Tensor:
    """``(x - mean) * factor + mean`` with per-image, per-channel means."""
    x = to_unit(images)
    means = x.mean(dim=(2, 3), keepdim=True)
    return to_uint8((x - means) * factor + means)


@register("saturate", random=False)
def saturate(images: torch.Tensor, param: tuple, rng: RandomSource) -> torch.Tensor:
    """HSV saturation ``s = clip(s * a + b, 0, 1)`` through skimage's rgb2hsv / hsv2rgb."""
    a, b = param
    hsv = rgb_to_hsv(to_unit(images))
    s = (hsv[:, 1:2] * a + b).clamp(0, 1)
    return to_uint8(hsv_to_rgb(torch.cat((hsv[:, :1], s, hsv[:, 2:]), 1)))


@lru_cache(maxsize=64)
def pil_box_coefficients(in_size: int, out_size: int) -> np.ndarray:
    """Pillow's BOX resampling matrix (out_size, in_size) as 22-bit fixed-point integers.

    Replays ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` of Pillow's Resample.c: the box
    of output pixel ``i`` is centred at ``(i + 0.5) * scale`` with half-width
    ``0.5 * max(scale, 1)``; input pixels whose scaled offset lies in (-0.5, 0.5] get weight 1,
    the weights are normalised in float64 and rounded to ``int(0.5 + w * 2**22)``.
    """
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 0.5 * filterscale
    coeffs = np.zeros((out_size, in_size), dtype=np.float64)
    for i in range(out_size):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), in_size)
        pos = (np.arange(lo, hi) - center + 0.5) * (1.0 / filterscale)
        w = ((pos > -0.5) & (pos <= 0.5)).astype(np.float64)
        total = w.sum()
        if total != 0.0:
            w = w / total
        coeffs[i, lo:hi] = w
    return np.floor(0.5 + coeffs * (1 << _PRECISION_BITS))


@lru_cache(maxsize=64)
def pil_box_taps(in_size: int, out_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``pil_box_coefficients`` as taps: (T, out_size) input indices and their int32 weights.

    A box covers a few input pixels (T <= ceil(scale) + 1); unused taps have weight 0.
    """
    coeffs = pil_box_coefficients(in_size, out_size)
    taps = max(1, int((coeffs != 0).sum(1).max()))
    index = np.zeros((taps, out_size), dtype=np.int64)
    weight = np.zeros((taps, out_size), dtype=np.int32)
    for i, row in enumerate(coeffs):
        cols = np.flatnonzero(row)
        index[: cols.size, i], weight[: cols.size, i] = cols, row[cols]
    return torch.from_numpy(index), torch.from_numpy(weight)


def _pil_resample_axis(x: torch.Tensor, in_size: int, out_size: int, dim: int) -> torch.Tensor:
    """One Pillow pass on int32: multiply-accumulate the few taps, +half, shift, clip to 0..255.

    Pillow's own integer arithmetic: weights sum to ~2**22, so sums stay below 2**31.
    """
    index, weight = pil_box_taps(in_size, out_size)
    shape = [1] * x.dim()
    shape[dim] = out_size
    acc = None
    for taps, w in zip(index.to(x.device), weight.to(x.device), strict=True):
        term = x.index_select(dim, taps) * w.reshape(shape)
        acc = term if acc is None else acc.add_(term)
    return acc.add_(1 << (_PRECISION_BITS - 1)).bitwise_right_shift_(_PRECISION_BITS).clamp_(0, 255)


def pil_box_resize(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``PIL.Image.resize((width, height), Image.BOX)`` of uint8-valued int32 (B, C, H, W).

    Pillow resamples horizontally first, then vertically, rounding to uint8 after each pass,
    and skips an axis whose size does not change.
    """
    h, w = x.shape[-2:]
    if width != w:
        x = _pil_resample_axis(x, w, width, -1)
    if height != h:
        x = _pil_resample_axis(x, h, height, -2)
    return x


@register("pixelate", random=False)
def pixelate(images: torch.Tensor, ratio: float, rng: RandomSource) -> torch.Tensor:
    """PIL BOX down to ``int(size * ratio)``, then BOX back up (bit-exact vs Pillow)."""
    h, w = images.shape[-2:]
    x = images.to(torch.int32)
    x = pil_box_resize(x, int(h * ratio), int(w * ratio))
    return pil_box_resize(x, h, w).to(torch.uint8)


@register("jpeg_compression", random=False)
def jpeg_compression(images: torch.Tensor, quality: int, rng: RandomSource) -> torch.Tensor:
    """Pillow JPEG save at ``quality`` and decode, image by image on the CPU.

    No torch route is faithful (differentiable JPEG approximations and torchvision's
    libjpeg-turbo encoder are not verified against Pillow), so this one corruption runs
    per image on the CPU whatever the device of ``images``, with Pillow's defaults
    (4:2:0 chroma subsampling, standard tables scaled by ``quality``).
    """
    arrays = images.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    out = np.empty_like(arrays)
    for i, arr in enumerate(arrays):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", quality=int(quality))
        buf.seek(0)
        with Image.open(buf) as decoded:
            out[i] = np.asarray(decoded.convert("RGB"))
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous().to(images.device)
