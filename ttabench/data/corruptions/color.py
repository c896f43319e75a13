"""Colour conversions used by the corruptions of Hendrycks & Dietterich (ICLR 2019).

brightness and saturate of "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" go through ``skimage.color.rgb2hsv`` / ``hsv2rgb`` and snow through OpenCV's
``COLOR_RGB2GRAY``; these are the same formulas, operation for operation, on (B, 3, H, W).
"""

from __future__ import annotations

import torch


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """``skimage.color.rgb2hsv`` on float (B, 3, H, W) in [0, 1].

    skimage assigns the hue for "red is max", then "green is max", then "blue is max", so on
    ties the later one wins; grey pixels (zero chroma) get hue and saturation 0.
    """
    r, g, b = x.unbind(1)
    v = x.amax(1)
    delta = v - x.amin(1)  # np.ptp
    grey = delta == 0
    s = torch.where(grey, 0.0, delta / v)
    # Which channel sets the hue (later wins), then h = 2 m + (next - after next) / delta.
    m = torch.where(b == v, 2, torch.where(g == v, 1, 0))[:, None]
    diff = x.gather(1, (m + 1) % 3) - x.gather(1, (m + 2) % 3)
    h = (diff / delta[:, None]).squeeze(1)
    h = torch.where(m.squeeze(1) == 0, h, 2.0 * m.squeeze(1) + h)
    h = torch.where(grey, 0.0, torch.remainder(h / 6.0, 1.0))
    return torch.stack((h, s, v), 1)


#: skimage's (r, g, b) per sector ``floor(6 h) % 6``, as indices into the stack (v, t, p, q).
_SECTOR_RGB = ((0, 1, 2), (3, 0, 2), (2, 0, 1), (2, 3, 0), (1, 2, 0), (0, 2, 3))


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """``skimage.color.hsv2rgb`` on float (B, 3, H, W): one gather instead of six selects."""
    h, s, v = hsv.unbind(1)
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    sector = hi.long() % 6  # skimage: astype(uint8) % 6
    table = torch.tensor(_SECTOR_RGB, device=hsv.device)
    pick = table[sector].permute(0, 3, 1, 2)  # (B, 3, H, W): which of v, t, p, q per channel
    return torch.stack((v, t, p, q), 1).gather(1, pick)


def rgb_to_gray_float32(x: torch.Tensor) -> torch.Tensor:
    """OpenCV ``cvtColor(float32 RGB, COLOR_RGB2GRAY)``: ``.299 R + .587 G + .114 B`` in float32.

    Returns (B, 1, H, W) float32.
    """
    # A float32 tensor times a Python float multiplies by the float32-rounded constant (0.299f,
    # ...), like OpenCV's float coefficients; the sum runs left to right in float32.
    r, g, b = x.to(torch.float32).unbind(1)
    return (r * 0.299 + g * 0.587 + b * 0.114)[:, None]
