"""Shared batched building blocks that replay the numerics of Hendrycks & Dietterich (ICLR 2019).

The corruptions of "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" were computed image by image with numpy, scipy, scikit-image, OpenCV and
ImageMagick. The helpers here rebuild the few primitives they share as batched torch ops on any
device, reproducing the library numerics where that is what decides the output bytes:

* ``to_unit`` / ``to_uint8``: ``x / 255`` in float64 and ``np.uint8(np.clip(x, 0, 1) * 255)``,
  i.e. truncation, not rounding.
* ``gaussian_filter``: ``skimage.filters.gaussian`` = ``scipy.ndimage.gaussian_filter`` with the
  same weights and the same accumulation order as scipy's C loop, so results agree bit for bit.
* ``clipped_zoom``: the scripts' centre crop + ``scipy.ndimage.zoom(order=1)`` + centred trim.
* ``magick_motion_blur``: ImageMagick 6 ``MotionBlurImage`` on 8-bit data (Q16 quanta).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Shape = Sequence[int]

#: Bytes of float64 data one pass of a per-element op should work on at a time on the CPU: a
#: few cache-sized chunks beat one pass over a whole batch, whose temporaries are fresh,
#: page-faulting allocations (scipy's per-image C loops stay in cache; this is how batching
#: catches up). Chunking never changes a result: every op chunked here is per element.
CPU_CHUNK_BYTES = 1 << 20


def chunk_rows(rows: int, row_bytes: int, device: torch.device) -> int:
    """How many leading rows of ``row_bytes`` each to process at once on ``device``."""
    if device.type != "cpu":
        return rows  # accelerators want the whole batch in one launch
    return max(1, min(rows, CPU_CHUNK_BYTES // max(1, row_bytes)))


#: The most images a ``whole_batch`` corruption gets at once: enough to share its per-call work
#: (glass's waves, fog's fractal levels), few enough to bound its memory (~2 MB per 224 px image).
WHOLE_BATCH_ROWS = 64


def per_chunk(
    images: torch.Tensor, fn: Callable[[slice], torch.Tensor], rows: int | None = None
) -> torch.Tensor:
    """``fn(slice)`` over slices of the batch, concatenated: ``rows`` images each, or as many as
    fit ``CPU_CHUNK_BYTES`` as float64 copies.

    For per-image work (any op here): the result is the same as one call on the whole batch.
    """
    b = images.shape[0]
    if b == 0:
        return fn(slice(0, 0))
    step = rows or chunk_rows(b, 8 * images[0].numel(), images.device)
    return torch.cat([fn(slice(s, s + step)) for s in range(0, b, step)])


class RandomSource:
    """All randomness of one ``corrupt`` call, drawn per sample or from one generator.

    Every draw has the batch as its leading dimension (``shape[0] == B``). With a sequence of
    ``B`` generators (per-sample seeding, spec 6.2), sample ``i``'s part of every draw comes
    from generator ``i`` alone, in the same order whatever the batch, so an image's corruption
    does not depend on the batch size, the order or the other images. With one generator (or
    ``None``: torch's global RNG of ``device``) a draw is one call for the whole batch.

    Random tensors are created on the generators' device (so a given generator state gives the
    same numbers whatever the image device) and then moved to ``device``.
    """

    def __init__(
        self,
        generator: torch.Generator | Sequence[torch.Generator] | None,
        device: torch.device | str,
        batch: int | None = None,
    ) -> None:
        self.device = torch.device(device)
        if generator is None or isinstance(generator, torch.Generator):
            self.generator, self.generators = generator, None
            self._source = generator.device if generator is not None else self.device
            return
        gens = list(generator)
        if not gens or not all(isinstance(g, torch.Generator) for g in gens):
            raise ValueError("generator must be a torch.Generator or a sequence of them")
        if batch is not None and len(gens) != batch:
            raise ValueError(f"got {len(gens)} generators for a batch of {batch} images")
        if len({g.device for g in gens}) != 1:
            raise ValueError("per-sample generators must all be on the same device")
        self.generator, self.generators = None, gens
        self._source = gens[0].device

    @property
    def per_sample(self) -> bool:
        """Whether each sample has its own generator."""
        return self.generators is not None

    def _check_leading(self, shape: tuple) -> list[torch.Generator]:
        gens = self.generators or []
        if not shape or shape[0] != len(gens):
            raise ValueError(
                f"per-sample draws need the batch ({len(gens)}) as leading dimension, got "
                f"shape {shape}"
            )
        return gens

    def _draw(self, shape: Shape, fn: Callable[[tuple, torch.Generator | None], torch.Tensor]):
        """``fn(shape, generator)`` once, or per sample on ``shape[1:]`` and stacked."""
        shape = tuple(shape)
        if self.generators is None:
            return fn(shape, self.generator).to(self.device)
        gens = self._check_leading(shape)
        return torch.stack([fn(shape[1:], g) for g in gens]).to(self.device)

    def normal(self, shape: Shape, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
        """float64 N(mean, std**2) samples, drawn as float32 standard normals.

        torch's vectorised float32 sampler is 5x faster on the CPU than float64; its 24-bit
        uniforms stop ``|z|`` at 5.8 on the CPU (a tail of probability 8e-9; ~6.7 on CUDA).
        """
        kw = {"dtype": torch.float32, "device": self._source}
        z = self._draw(shape, lambda s, g: torch.randn(s, generator=g, **kw))
        return z.to(torch.float64) * std + mean

    def uniform(
        self, shape: Shape, low: float, high: float, draw: torch.dtype = torch.float64
    ) -> torch.Tensor:
        """U[low, high) samples (numpy's ``low + (high - low) * random()``), in ``draw``."""
        kw = {"dtype": draw, "device": self._source}
        u = self._draw(shape, lambda s, g: torch.rand(s, generator=g, **kw))
        return low + (high - low) * u

    def integers(
        self, shape: Shape, low: int, high: int, dtype: torch.dtype = torch.int64
    ) -> torch.Tensor:
        """Samples uniform on ``[low, high)`` like ``np.random.randint``.

        The values do not depend on ``dtype`` (torch draws 32 bits per value for ranges below
        2**32); a narrow one only saves memory.
        """
        kw = {"dtype": dtype, "device": self._source}
        return self._draw(shape, lambda s, g: torch.randint(low, high, s, generator=g, **kw))


def to_unit(images: torch.Tensor, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """uint8 -> ``x / 255`` (``np.array(img) / 255.``; float32 where the script casts first)."""
    return images.to(dtype) / 255.0


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``np.uint8(np.clip(x, 0, 1) * 255)`` in the dtype of ``x``: clip, scale, truncate."""
    return (x.clamp(0, 1) * 255).floor_().to(torch.uint8)


def fold_index(i: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    """Integer indices ``i`` of any range mapped into ``[0, n)`` by an extension ``mode``.

    Modes use scipy.ndimage names: ``nearest`` (edge repeat, OpenCV BORDER_REPLICATE),
    ``reflect`` (half-sample symmetric ``dcba|abcd|dcba``), ``mirror`` (whole-sample
    ``dcb|abcd|cba``, OpenCV BORDER_REFLECT_101); the last two are periodic.
    """
    if mode == "nearest" or n == 1:
        return i.clamp(0, n - 1)
    if mode == "reflect":
        i = i.remainder(2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "mirror":
        i = i.remainder(2 * n - 2)
        return torch.where(i >= n, 2 * n - 2 - i, i)
    raise ValueError(f"unknown extension mode {mode!r}")


def extension_index(
    n: int, before: int, after: int, mode: str, device: torch.device
) -> torch.Tensor:
    """Source indices of a 1-D signal of length ``n`` padded by ``before``/``after`` samples
    (``fold_index`` of ``-before .. n + after - 1``; any pad width, also wider than ``n``)."""
    return fold_index(torch.arange(-before, n + after, device=device), n, mode)


def pad2d(x: torch.Tensor, radius: int, mode: str) -> torch.Tensor:
    """Pad the last two dims of ``x`` by ``radius`` on every side (see ``extension_index``)."""
    h, w = x.shape[-2:]
    rows = extension_index(h, radius, radius, mode, x.device)
    cols = extension_index(w, radius, radius, mode, x.device)
    return x.index_select(-2, rows).index_select(-1, cols)


def gaussian_weights(sigma: float, truncate: float) -> np.ndarray:
    """scipy's ``_gaussian_kernel1d`` weights (radius ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (sigma * sigma) * x**2)
    return phi / phi.sum()


def correlate1d_symmetric(
    x: torch.Tensor, weights: np.ndarray, dim: int, mode: str
) -> torch.Tensor:
    """scipy ``correlate1d`` with a symmetric odd kernel, in scipy's accumulation order.

    scipy's C loop computes ``w[0] * x[i]`` and then adds ``(x[i - j] + x[i + j]) * w[j]`` for
    ``j = r .. 1``; doing the same (no fused multiply-add) makes the float64 result identical,
    which matters because the final ``np.uint8`` truncation turns 1-ulp differences on
    integer-valued pixels (flat regions) into 1-grey-level differences.
    """
    r = len(weights) // 2
    n = x.shape[dim]
    xp = x.index_select(dim, extension_index(n, r, r, mode, x.device))
    acc = xp.narrow(dim, r, n) * float(weights[r])
    pair = torch.empty_like(acc)
    for j in range(r, 0, -1):  # in place: fresh temporaries per tap cost 2-3x on the CPU
        torch.add(xp.narrow(dim, r - j, n), xp.narrow(dim, r + j, n), out=pair)
        acc.add_(pair.mul_(float(weights[r - j])))
    return acc


def gaussian_filter(
    x: torch.Tensor, sigma: float, mode: str = "nearest", truncate: float = 4.0
) -> torch.Tensor:
    """``skimage.filters.gaussian(x, sigma, mode, truncate, channel_axis=-1)`` on (..., H, W).

    scipy filters axis 0 (rows) first, then axis 1; a sigma of (almost) zero is a copy.
    """
    if sigma <= 1e-15:
        return x.clone()
    w = gaussian_weights(sigma, truncate)
    flat = x.reshape(-1, *x.shape[-2:])
    step = chunk_rows(len(flat), flat[0].numel() * flat.element_size(), x.device)
    out = torch.empty_like(flat)
    for start in range(0, len(flat), step):  # cache-sized chunks: 5-12x faster on the CPU
        part = flat[start : start + step]
        out[start : start + step] = correlate1d_symmetric(
            correlate1d_symmetric(part, w, -2, mode), w, -1, mode
        )
    return out.view(x.shape)


def zoom_geometry(h: int, w: int, zoom: float) -> tuple[int, int, int, int]:
    """``clipped_zoom``'s centre crop ``(ch, cw)`` and resized size ``(zh, zw)``: all it depends on.

    The crop has ``ceil(size / zoom)`` pixels and is resized to ``round(crop * zoom)``; nearby
    factors often share them (16 CIFAR severity-3 factors give 9 geometries).
    """
    ch, cw = int(np.ceil(h / zoom)), int(np.ceil(w / zoom))
    return ch, cw, int(round(ch * zoom)), int(round(cw * zoom))


def clipped_zoom(x: torch.Tensor, zoom: float) -> torch.Tensor:
    """The scripts' ``clipped_zoom`` on (..., H, W): crop, ``scipy.ndimage.zoom(order=1)``, trim.

    scipy's order-1 zoom maps corner to corner, i.e. ``align_corners=True`` bilinear
    interpolation, computed here in float64 like scipy (a crop resized to its own size is
    returned as it is: both map every pixel onto itself). The script uses the height for both
    axes; each axis is treated on its own here, which is the same for square images.
    """
    h, w = x.shape[-2:]
    ch, cw, zh, zw = zoom_geometry(h, w, zoom)
    top, left = (h - ch) // 2, (w - cw) // 2
    out = x[..., top : top + ch, left : left + cw]
    if (zh, zw) != (ch, cw):
        flat = out.reshape(-1, 1, ch, cw).to(torch.float64)
        out = F.interpolate(flat, size=(zh, zw), mode="bilinear", align_corners=True)
        out = out.reshape(*x.shape[:-2], zh, zw).to(x.dtype)
    th, tw = (zh - h) // 2, (zw - w) // 2
    return out[..., th : th + h, tw : tw + w]


# ImageMagick's MagickSQ2PI (magick/image-private.h), sqrt(2 pi) as a double literal.
_MAGICK_SQ2PI = 2.50662827463100024161235523934010416269302368164062


def magick_motion_kernel(radius: float, sigma: float) -> np.ndarray:
    """IM6 ``GetMotionBlurKernel``: one-sided Gaussian over ``2 * ceil(radius) + 1`` taps."""
    width = int(2.0 * math.ceil(radius) + 1.0)
    k = [math.exp(-(i * i) / (2.0 * sigma * sigma)) / (_MAGICK_SQ2PI * sigma) for i in range(width)]
    norm = 0.0
    for v in k:  # sequential sum, as IM does
        norm += v
    return np.array([v / norm for v in k])


def magick_motion_offsets(width: int, angles: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image integer tap offsets (dy, dx), each (B, width), of IM6 ``MotionBlurImage``."""
    rad = math.pi * angles.to(torch.float64) / 180.0
    px, py = width * torch.sin(rad), width * torch.cos(rad)
    hyp = torch.hypot(px, py)[:, None]
    i = torch.arange(width, dtype=torch.float64, device=angles.device)[None, :]
    dx = torch.ceil(i * py[:, None] / hyp - 0.5).long()
    dy = torch.ceil(i * px[:, None] / hyp - 0.5).long()
    return dy, dx


def magick_motion_blur(
    x: torch.Tensor, radius: float, sigma: float, angles: torch.Tensor
) -> torch.Tensor:
    """ImageMagick 6 (Q16) motion blur of uint8 images (B, C, H, W), one angle per image.

    Replays what ``wand``'s ``MagickMotionBlurImage`` does to an 8-bit PNG: quanta are
    ``257 * v``; each output is the kernel-weighted sum of the pixels at the taps'
    offsets (edge virtual pixels = clamped indices), accumulated tap by tap in float64,
    rounded to a Q16 quantum (``ClampToQuantum``) and written back to 8 bits by truncating
    ``q / 257`` (measured on ImageMagick 6.9.11 Q16: bit-identical). Returns uint8.
    """
    b, c, h, w = x.shape
    kernel = magick_motion_kernel(radius, sigma)
    dy, dx = magick_motion_offsets(len(kernel), angles.to(x.device))
    # Edge virtual pixels = replicate padding (of the uint8 image: 8x less to copy). Taps are
    # accumulated in IM's order without fused multiply-adds, in place; small images gather all
    # images' shifted pixels at once, large ones read a plain slice per image (offsets differ
    # per image), which is faster there.
    pad = int(max(dy.abs().max().item(), dx.abs().max().item()))
    padded = pad2d(x, pad, "nearest").to(torch.float64).mul_(257.0)
    hp, wp = h + 2 * pad, w + 2 * pad
    acc = torch.zeros(b, c, h, w, dtype=torch.float64, device=x.device)
    if h * w <= 64 * 64:
        flat = padded.reshape(b, c, hp * wp)
        base = torch.arange(h, device=x.device)[:, None] * wp + torch.arange(w, device=x.device)
        start = (dy + pad) * wp + (dx + pad)  # (B, width) flat offset of each tap
        tap = torch.empty(b, c, h * w, dtype=torch.float64, device=x.device)
        for i, k in enumerate(kernel.tolist()):
            index = (base.reshape(1, 1, h * w) + start[:, i, None, None]).expand(b, c, h * w)
            acc += torch.gather(flat, 2, index, out=tap).mul_(k).view(b, c, h, w)
    else:
        dys, dxs = (dy + pad).tolist(), (dx + pad).tolist()
        for i, k in enumerate(kernel.tolist()):
            for j in range(b):
                oy, ox = dys[j][i], dxs[j][i]
                acc[j] += k * padded[j, :, oy : oy + h, ox : ox + w]
    return quantum_to_uint8(acc.add_(0.5).floor_().clamp_(0, 65535))


def quantum_to_uint8(q: torch.Tensor) -> torch.Tensor:
    """``q // 257`` of integer-valued float Q16 quanta 0..65535 (overwrites ``q``), as uint8.

    A multiply instead of a division (~5x faster on the CPU): the +0.5 keeps every ``q / 257``
    at least 1/514 away from an integer, far beyond the reciprocal's round-off, and the cast
    truncates.
    """
    return q.add_(0.5).mul_(1.0 / 257.0).to(torch.uint8)
