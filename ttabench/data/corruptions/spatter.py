"""Spatter of Hendrycks & Dietterich (ICLR 2019): OpenCV on the CPU where torch has no equivalent.

"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (extra
corruption of ``make_cifar_c.py`` / ``make_imagenet_c.py``) draws a liquid layer
``N(loc, scale)`` per pixel, smooths it with ``skimage.filters.gaussian(sigma)`` and zeroes it
below ``threshold``; then

* water (mode 0): ``layer * 255`` to uint8 (numpy's cast: values >= 256 wrap around), Canny
  edges (50, 150), chamfer ``distanceTransform(DIST_L2, 5)`` to them, truncated at 20, 3x3 box
  blur -> uint8, ``equalizeHist``, saturating uint8 ``filter2D`` with the emboss kernel, 3x3 box
  blur; the product ``layer_u8 * dist`` scaled to max 1 times ``intensity`` adds pale turquoise
  (175, 238, 238) to the float32 image;
* mud (mode 1): the mask ``layer > threshold``, smoothed by ``gaussian(sigma=intensity)`` in
  float32 and zeroed below 0.8, blends the image towards mud brown (63, 42, 20).

Canny, the chamfer distance, histogram equalisation and the saturating filter2D have no faithful
torch equivalent (spec 2.4), so that chain runs in OpenCV (``opencv-python-headless``, optional,
imported lazily) image by image on the CPU; the Gaussians, thresholds, the mud branch and the
blends are batched torch ops on the images' device, in the scripts' float32/float64 precision.
Channels: the script names them BGR for OpenCV but they are the image's RGB, so the colours
above are RGB as its comments say. Output: ``np.uint8`` truncation; a layer with no water at
all makes the script divide 0 by 0, whose NaN image casts to 0 (x86), replayed as such.

The mud mask is smoothed in float32 as current scikit-image does (``gaussian`` keeps float32);
a 2018 scikit-image may have promoted it to float64, which moves a few pixels by <= 1 level.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .ops import (
    RandomSource,
    correlate1d_symmetric,
    gaussian_filter,
    gaussian_weights,
    to_uint8,
    to_unit,
)
from .registry import CorruptionUnavailableError, register

EMBOSS = np.array([[-2, -1, 0], [-1, 1, 1], [0, 1, 2]], dtype=np.float32)
WATER = (175, 238, 238)  # "water is pale turquoise"
MUD = (63, 42, 20)  # "mud brown"


def opencv() -> Any:
    """The ``cv2`` module, or :class:`CorruptionUnavailableError` saying how to install it."""
    try:
        import cv2
    except ImportError as exc:
        raise CorruptionUnavailableError(
            "spatter needs OpenCV (Canny, distanceTransform, equalizeHist, saturating "
            "filter2D have no faithful torch equivalent): pip install opencv-python-headless "
            "(or pip install 'ttabench[spatter]')"
        ) from exc
    return cv2


def check_opencv() -> None:
    """Raise :class:`CorruptionUnavailableError` unless ``cv2`` imports."""
    opencv()


def describe_opencv() -> dict[str, str]:
    """Provenance: the OpenCV version that ran the water branch."""
    return {"spatter_backend": f"OpenCV {opencv().__version__} on the CPU (water branch)"}


def water_distance(layer: np.ndarray) -> np.ndarray:
    """The water branch's OpenCV chain on one uint8 (H, W) layer -> float32 (H, W)."""
    cv2 = opencv()
    dist = cv2.distanceTransform(255 - cv2.Canny(layer, 50, 150), cv2.DIST_L2, 5)
    _, dist = cv2.threshold(dist, 20, 20, cv2.THRESH_TRUNC)
    dist = cv2.equalizeHist(cv2.blur(dist, (3, 3)).astype(np.uint8))
    dist = cv2.filter2D(dist, cv2.CV_8U, EMBOSS)  # saturates to 0..255
    return cv2.blur(dist, (3, 3)).astype(np.float32)


def gaussian_float32(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """scipy's ``gaussian_filter`` of a float32 (..., H, W): each 1-D pass in float64, stored
    in float32 (its output array), rows first; mode 'nearest', truncate 4."""
    w = gaussian_weights(sigma, 4.0)
    x = correlate1d_symmetric(x.to(torch.float64), w, -2, "nearest").to(torch.float32)
    return correlate1d_symmetric(x.to(torch.float64), w, -1, "nearest").to(torch.float32)


def _colour(rgb: tuple[int, int, int], device: torch.device) -> torch.Tensor:
    # ``c / 255. * np.ones_like(float32)``: the float64 ratio rounded to float32.
    return torch.tensor([c / 255.0 for c in rgb], dtype=torch.float32, device=device)[:, None, None]


def spatter_apply(images: torch.Tensor, param: tuple, noise: torch.Tensor) -> torch.Tensor:
    """Everything of spatter after the draw, given the raw N(loc, scale) layer (B, H, W)."""
    _, _, sigma, threshold, intensity, mode = param
    x = to_unit(images, torch.float32)
    layer = gaussian_filter(noise.to(images.device, torch.float64), sigma)
    layer = torch.where(layer < threshold, 0.0, layer)
    if mode == 0:
        layer8 = torch.floor(layer * 255).long().remainder_(256).to(torch.uint8)
        dist = np.stack([water_distance(a) for a in layer8.cpu().numpy()])
        m = layer8.to(torch.float32) * torch.from_numpy(dist).to(images.device)
        m = m / m.amax((1, 2), keepdim=True) * intensity  # float32; 0 / 0 = NaN as in numpy
        out = x + m[:, None] * _colour(WATER, images.device)
        return to_uint8(torch.nan_to_num(out, nan=0.0))
    mask = gaussian_float32((layer > threshold).to(torch.float32), intensity)
    mask = torch.where(mask < 0.8, 0.0, mask)[:, None]
    return to_uint8(x * (1 - mask) + _colour(MUD, images.device) * mask)


@register("spatter", random=True, check=check_opencv, describe=describe_opencv)
def spatter(images: torch.Tensor, param: tuple, rng: RandomSource) -> torch.Tensor:
    """Water or mud spatter (``param = (loc, scale, sigma, threshold, intensity, mode)``)."""
    opencv()  # fail before drawing anything
    b, _, h, w = images.shape
    noise = rng.normal((b, h, w), mean=param[0], std=param[1])
    return spatter_apply(images, param, noise)
