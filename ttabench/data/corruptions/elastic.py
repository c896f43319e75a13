"""Elastic transform of Hendrycks & Dietterich (ICLR 2019), batched in torch.

"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" warps the image
in two steps (``make_cifar_c.py`` / ``make_imagenet_c.py``, after a gist by erniejunior):

1. a random affine map fixed by jittering 3 points (``cv2.getAffineTransform``), applied with
   ``cv2.warpAffine`` (bilinear, BORDER_REFLECT_101) to the float32 image;
2. a smooth displacement field, ``gaussian(U(-1, 1), sigma, mode='reflect', truncate=3) * alpha``
   per axis, applied with ``scipy.ndimage.map_coordinates(order=1, mode='reflect')``.

Step 1 replays the OpenCV 2.x-4.10 fixed-point warp that generated the benchmark: source
coordinates are rounded to 1/32 pixel (``INTER_BITS = 5``) and interpolated with float32
table weights. Newer OpenCV (4.11+) warps with unquantised float coordinates, so it differs
from the released data by up to ~1/64 pixel of displacement; this module follows the old
behaviour on purpose. Step 2 replays scipy's arithmetic in float64 and rounds to float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from .ops import RandomSource, fold_index, gaussian_filter, to_uint8, to_unit
from .registry import register

_AB_BITS, _INTER_BITS = 10, 5  # OpenCV imgwarp.cpp fixed-point precision


def affine_points(h: int, w: int) -> torch.Tensor:
    """The 3 anchor points (x, y) of the script, as float32 (3, 2).

    The script builds them from ``shape[:2]`` = (h, w) but OpenCV reads them as (x, y); the two
    agree for square images and the script's order is kept for others.
    """
    centre = torch.tensor([h // 2, w // 2], dtype=torch.float32)
    size = min(h, w) // 3
    return torch.stack([centre + size, centre + torch.tensor([size, -size]), centre - size])


def affine_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``cv2.getAffineTransform`` for a batch: (B, 3, 2) float32 points -> (B, 2, 3) float64."""
    b = dst.shape[0]
    src = src.to(torch.float64).expand(b, 3, 2)
    a = torch.zeros(b, 6, 6, dtype=torch.float64, device=dst.device)
    ones = torch.ones(b, 3, 1, dtype=torch.float64, device=dst.device)
    rows = torch.cat((src.to(dst.device), ones), -1)  # (B, 3, 3): x, y, 1
    a[:, 0::2, 0:3] = rows
    a[:, 1::2, 3:6] = rows
    rhs = dst.to(torch.float64).reshape(b, 6, 1)
    return torch.linalg.solve(a, rhs).reshape(b, 2, 3)


def _invert_affine(m: torch.Tensor) -> torch.Tensor:
    """OpenCV's in-place inversion inside warpAffine (same formula and operation order)."""
    m0, m1, m2, m3, m4, m5 = m.reshape(-1, 6).unbind(1)
    det = m0 * m4 - m1 * m3
    d = torch.where(det != 0, 1.0 / det, 0.0)
    a11, a22 = m4 * d, m0 * d
    i1, i3 = m1 * -d, m3 * -d
    b1 = -a11 * m2 - i1 * m5
    b2 = -i3 * m2 - a22 * m5
    return torch.stack((a11, i1, b1, i3, a22, b2), 1)


def warp_affine(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """``cv2.warpAffine(x, M, (w, h), borderMode=BORDER_REFLECT_101)`` of float32 (B, C, H, W)."""
    h, w = x.shape[-2:]
    inv = _invert_affine(m.to(x.device))[:, :, None, None]  # (B, 6, 1, 1)
    scale = float(1 << _AB_BITS)
    ys = torch.arange(h, dtype=torch.float64, device=x.device)[None, :, None]
    xs = torch.arange(w, dtype=torch.float64, device=x.device)[None, None, :]
    # saturate_cast<int>(double) rounds half to even, like torch.round.
    round_delta = (1 << _AB_BITS) // (1 << _INTER_BITS) // 2
    x0 = torch.round((inv[:, 1] * ys + inv[:, 2]) * scale).long() + round_delta
    y0 = torch.round((inv[:, 4] * ys + inv[:, 5]) * scale).long() + round_delta
    xq = (x0 + torch.round(inv[:, 0] * xs * scale).long()) >> (_AB_BITS - _INTER_BITS)
    yq = (y0 + torch.round(inv[:, 3] * xs * scale).long()) >> (_AB_BITS - _INTER_BITS)
    tab = 1 << _INTER_BITS
    sx, sy = xq >> _INTER_BITS, yq >> _INTER_BITS  # (B, H, W) integer source corner
    fx = (xq & (tab - 1)).to(torch.float32) / tab  # exact: k / 32
    fy = (yq & (tab - 1)).to(torch.float32) / tab
    weights = ((1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx)
    out = None
    for v, weight in zip(neighbours(x, sy, sx, REFLECT_101), weights, strict=True):
        term = v.mul_(weight[:, None])
        out = term if out is None else out.add_(term)  # float32, left to right like OpenCV
    return out


class Border(NamedTuple):
    """A periodic extension mode of ``ops.fold_index`` and its period for a length ``n``."""

    mode: str
    period: Callable[[int], int]

    def fold(self, i: torch.Tensor, n: int) -> torch.Tensor:
        """Any integer index ``i`` mapped into ``[0, n)``."""
        return fold_index(i, n, self.mode)


def neighbours(
    x: torch.Tensor, r0: torch.Tensor, c0: torch.Tensor, border: Border
) -> list[torch.Tensor]:
    """The pixels at (r0 + i, c0 + j) of x (B, C, H, W), for (i, j) = 00, 01, 10, 11.

    r0, c0: int64 (B, H, W), may leave the image. The image is first extended by the border
    over the span of the indices, so each neighbour is one gather at a fixed offset instead of
    four per-pixel folds.
    """
    b, c, h, w = x.shape
    if b == 0:
        return [x.clone() for _ in range(4)]
    r0, rows = _window(r0, h, border)
    c0, cols = _window(c0, w, border)
    wide = cols.numel()
    flat = x.index_select(2, rows).index_select(3, cols).reshape(b, c, -1)
    base = (r0 * wide + c0).reshape(b, 1, h * w)
    return [
        flat.gather(2, (base + (i * wide + j)).expand(b, c, h * w)).reshape(b, c, h, w)
        for i, j in ((0, 0), (0, 1), (1, 0), (1, 1))
    ]


def _window(i: torch.Tensor, n: int, border: Border) -> tuple[torch.Tensor, torch.Tensor]:
    """``i`` shifted to start at 0, and the folded source index of each of ``i``'s positions
    and the one after. Indices spread over more than a period are first reduced modulo it (the
    fold is periodic), so the window never exceeds about two periods."""
    low, high = torch.stack((i.amin(), i.amax())).tolist()  # one host sync
    period = border.period(n)
    if high - low >= period:
        i = i.remainder(period)
        low, high = 0, period - 1
    lookup = border.fold(torch.arange(low, high + 2, device=i.device), n)
    return i - low, lookup


def _in_range(i: torch.Tensor, low: int, high: int) -> bool:
    return bool(((i.amin() >= low) & (i.amax() <= high)).item())


def _reflect_coordinate(c: torch.Tensor, n: int) -> torch.Tensor:
    """scipy's ``map_coordinate`` for mode 'reflect' (half-sample symmetric)."""
    if n <= 1:
        return torch.zeros_like(c)
    sz2 = 2 * n
    if _in_range(c, -n, sz2 - 1):  # no wrap-around: the same values with fewer passes
        return torch.where(c < 0, -c - 1, torch.where(c >= n, sz2 - c - 1, c))
    neg = c < 0
    cn = torch.where(c < -sz2, sz2 * torch.trunc(-c / sz2) + c, c)
    cn = torch.where(cn < -n, cn + sz2, -cn - 1)
    cp = c - sz2 * torch.trunc(c / sz2)
    cp = torch.where(cp >= n, sz2 - cp - 1, cp)
    return torch.where(neg, cn, torch.where(c > n - 1, cp, c))


def map_coordinates_reflect(
    x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """``scipy.ndimage.map_coordinates(x, (rows, cols, channel), order=1, mode='reflect')``.

    x: float32 (B, C, H, W); rows, cols: float64 (B, H, W). Interpolates in float64 in scipy's
    order (neighbours row-major, each term ``(value * w_row) * w_col``) and rounds to float32.
    """
    h, w = x.shape[-2:]
    rr, cc = _reflect_coordinate(rows, h), _reflect_coordinate(cols, w)
    r0, c0 = torch.floor(rr), torch.floor(cc)
    tr, tc = rr - r0, cc - c0
    wr, wc = (1 - tr, tr), (1 - tc, tc)
    out = None
    corners = neighbours(x, r0.long(), c0.long(), HALF_SAMPLE)  # exact in float32
    for v, (i, j) in zip(corners, ((0, 0), (0, 1), (1, 0), (1, 1)), strict=True):
        term = v.double().mul_(wr[i][:, None]).mul_(wc[j][:, None])
        out = term if out is None else out.add_(term)
    return out.to(torch.float32)


REFLECT_101 = Border("mirror", lambda n: max(1, 2 * n - 2))  # OpenCV BORDER_REFLECT_101
HALF_SAMPLE = Border("reflect", lambda n: 2 * n)  # scipy.ndimage mode 'reflect'


def elastic_apply(
    images: torch.Tensor,
    param: tuple,
    jitter: torch.Tensor,
    field_x: torch.Tensor,
    field_y: torch.Tensor,
) -> torch.Tensor:
    """Everything of elastic_transform after the draws.

    ``jitter`` (B, 3, 2) ~ U(-j, j) moves the anchor points; ``field_x``/``field_y`` (B, H, W)
    ~ U(-1, 1) are the raw displacement fields (smoothed and scaled here).
    """
    scale, (alpha_f, sigma_f, _) = param
    alpha, sigma = scale * alpha_f, scale * sigma_f
    b, _, h, w = images.shape
    x = to_unit(images, torch.float32)
    src = affine_points(h, w).to(x.device)
    dst = src + jitter.to(x.device, torch.float32)
    x = warp_affine(x, affine_from_points(src[None], dst))
    dx = (gaussian_filter(field_x.to(x.device), sigma, "reflect", 3.0) * alpha).to(torch.float32)
    dy = (gaussian_filter(field_y.to(x.device), sigma, "reflect", 3.0) * alpha).to(torch.float32)
    ys = torch.arange(h, dtype=torch.float64, device=x.device)[None, :, None]
    xs = torch.arange(w, dtype=torch.float64, device=x.device)[None, None, :]
    return to_uint8(map_coordinates_reflect(x, ys + dy.double(), xs + dx.double()))


@register("elastic_transform", random=True)
def elastic_transform(images: torch.Tensor, param: tuple, rng: RandomSource) -> torch.Tensor:
    """Random affine warp followed by a smooth random displacement field."""
    scale, (_, _, jitter_f) = param
    b, _, h, w = images.shape
    j = scale * jitter_f
    jitter = rng.uniform((b, 3, 2), -j, j).to(torch.float32)
    field_x = rng.uniform((b, h, w), -1.0, 1.0)
    field_y = rng.uniform((b, h, w), -1.0, 1.0)
    return elastic_apply(images, param, jitter, field_x, field_y)
