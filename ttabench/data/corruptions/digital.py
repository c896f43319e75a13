"""Digital corruptions of Hendrycks & Dietterich (ICLR 2019): contrast, saturate, pixelate, JPEG.

From "Benchmarking Neural Network Robustness to Common Corruptions and Perturbations"
(``make_cifar_c.py``, ``make_imagenet_c.py``). pixelate and jpeg_compression return PIL images
in the originals (exact uint8, no truncation step); pixelate is rebuilt bit-exactly from
Pillow's fixed-point BOX resampler, JPEG is Pillow's codec (run by torchvision's libjpeg-turbo
where a probe shows the same bytes). elastic_transform lives in ``elastic.py``, spatter
(grouped with the weather ones) in ``spatter.py``.
"""

from __future__ import annotations

import io
import warnings
from functools import cache, lru_cache

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


def _pillow_round_trip(arr: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
    """Pillow's JPEG file of one HWC uint8 image at ``quality``, and its decoded pixels."""
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    with Image.open(buf) as decoded:
        return buf.getvalue(), np.asarray(decoded.convert("RGB"))


def _pillow_jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    arrays = images.permute(0, 2, 3, 1).contiguous().numpy()
    out = [_pillow_round_trip(arr, quality)[1] for arr in arrays]
    return torch.from_numpy(np.stack(out) if out else arrays).permute(0, 3, 1, 2).contiguous()


def _torchvision_round_trip(
    images: torch.Tensor, quality: int
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """torchvision's JPEG files of CPU uint8 (B, 3, H, W) images, and their decoded pixels."""
    from torchvision.io import decode_jpeg, encode_jpeg

    with warnings.catch_warnings():
        # Deprecated since torchvision 0.29 in favour of TorchCodec; once it is removed the
        # import fails, ``torchvision_jpeg_is_pillow`` says no and Pillow does the work.
        warnings.simplefilter("ignore", DeprecationWarning)
        files = encode_jpeg(list(images), quality=quality)
        return files, decode_jpeg(files)


def _torchvision_jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    if len(images) == 0:
        return images.clone()
    return torch.stack(_torchvision_round_trip(images, quality)[1])


@cache
def torchvision_jpeg_is_pillow(quality: int, height: int, width: int) -> bool:
    """Whether torchvision's CPU JPEG round trip gives Pillow's file and pixels, for images of
    this size at ``quality``: checked once on a probe of that size (noise plus gradients).

    Both wheels bundle a libjpeg-turbo (their own builds) and use its defaults (4:2:0 chroma,
    baseline, islow DCT, fancy upsampling); they agree byte for byte on every table quality for
    random and smooth images from 1 x 1 to 224 x 224, and torchvision's C++ loop is ~3x faster
    on CIFAR images. A build that differs on the probe, or cannot encode, gets Pillow.
    """
    rng = np.random.default_rng(quality)
    probe = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    half = width // 2
    probe[:, :half] = (
        np.linspace(0, 255, height * half * 3).reshape(height, half, 3).astype(np.uint8)
    )
    try:
        files, decoded = _torchvision_round_trip(
            torch.from_numpy(probe).permute(2, 0, 1)[None], quality
        )
    except (ImportError, AttributeError, RuntimeError):  # no torchvision.io or no image ops
        return False
    file, pixels = _pillow_round_trip(probe, quality)
    same_file = bytes(files[0].numpy()) == file
    return same_file and np.array_equal(decoded[0].permute(1, 2, 0).numpy(), pixels)


def describe_jpeg() -> dict[str, str]:
    """Provenance: whose bytes jpeg_compression writes (Pillow's) and what may run it."""
    import PIL
    import torchvision
    from PIL import features

    turbo = features.version_feature("libjpeg_turbo") or "no"
    return {
        "jpeg_backend": f"Pillow {PIL.__version__} JPEG (libjpeg-turbo {turbo}) bytes; encoded "
        f"by torchvision {torchvision.__version__}'s libjpeg-turbo where a probe gives them"
    }


@register("jpeg_compression", random=False, describe=describe_jpeg)
def jpeg_compression(images: torch.Tensor, quality: int, rng: RandomSource) -> torch.Tensor:
    """Pillow JPEG save at ``quality`` and decode, on the CPU whatever the device of ``images``.

    No torch route is faithful (differentiable JPEG approximations are not Pillow, nor is
    nvJPEG), so the real codec runs with Pillow's defaults (4:2:0 chroma subsampling, standard
    tables scaled by ``quality``): torchvision's libjpeg-turbo where it is verified to give
    Pillow's bytes (``torchvision_jpeg_is_pillow``), else Pillow image by image.
    """
    quality = int(quality)
    cpu = images.cpu().contiguous()
    if cpu.shape[1] == 3 and torchvision_jpeg_is_pillow(quality, *cpu.shape[-2:]):
        out = _torchvision_jpeg(cpu, quality)
    else:
        out = _pillow_jpeg(cpu, quality)
    return out.to(images.device)
