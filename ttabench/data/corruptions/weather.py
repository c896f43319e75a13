"""Weather corruptions of Hendrycks & Dietterich (ICLR 2019), batched in torch.

snow, fog and brightness of "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (``make_cifar_c.py``, ``make_imagenet_c.py``). frost lives in ``frost.py`` (its
textures are found at run time) and spatter in ``spatter.py`` (OpenCV).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .color import hsv_to_rgb, rgb_to_gray_float32, rgb_to_hsv
from .ops import RandomSource, clipped_zoom, magick_motion_blur, per_chunk, to_uint8, to_unit
from .registry import register

#: ``draw(shape, low, high)`` -> (B, *shape) float64 uniform samples.
UniformDraw = Callable[[tuple, float, float], torch.Tensor]


def plasma_fractal(
    batch: int,
    mapsize: int,
    wibbledecay: float,
    draw: UniformDraw,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Diamond-square height maps (B, mapsize, mapsize) in [0, 1], as the scripts' generator.

    The scripts' ``plasma_fractal`` (after FLHerne/mapgen) starts from a zero corner; at each
    step size it fills square centres with the mean of their 4 corners and diamond centres with
    the mean of their 4 neighbours (wrapping around), each plus ``wibble * U(-wibble, wibble)``,
    then halves the step and divides ``wibble`` (initially 100) by ``wibbledecay``. The map is
    finally shifted and scaled to [0, 1] (per image). Draws are requested in the script's order
    and shapes (squares, then the two diamond sets), so a recorded ``draw`` replays exactly.
    """
    m = torch.zeros(batch, mapsize, mapsize, dtype=torch.float64, device=device)
    step, wibble = mapsize, 100.0

    def wibbled_mean(a: torch.Tensor) -> torch.Tensor:
        u = draw(tuple(a.shape[1:]), -wibble, wibble).to(a.device)
        return a / 4 + wibble * u

    while step >= 2:
        half = step // 2
        corners = m[:, 0::step, 0::step]
        acc = corners + corners.roll(-1, 1)
        acc = acc + acc.roll(-1, 2)
        m[:, half::step, half::step] = wibbled_mean(acc)
        centres = m[:, half::step, half::step]
        corners = m[:, 0::step, 0::step]
        left = (centres + centres.roll(1, 1)) + (corners + corners.roll(-1, 2))
        m[:, 0::step, half::step] = wibbled_mean(left)
        top = (centres + centres.roll(1, 2)) + (corners + corners.roll(-1, 1))
        m[:, half::step, 0::step] = wibbled_mean(top)
        step //= 2
        wibble /= wibbledecay
    flat = m.reshape(batch, -1)
    flat = flat - flat.amin(1, keepdim=True)
    return (flat / flat.amax(1, keepdim=True)).reshape(batch, mapsize, mapsize)


def fog_blend(images: torch.Tensor, plasma: torch.Tensor, strength: float) -> torch.Tensor:
    """``x + strength * plasma``, rescaled by ``max / (max + strength)`` (max over the image)."""
    x = to_unit(images)
    h, w = x.shape[-2:]
    max_val = x.reshape(x.shape[0], -1).amax(1)[:, None, None, None]
    x = x + strength * plasma[:, None, :h, :w].to(x.device)
    return to_uint8(x * max_val / (max_val + strength))


@register("fog", random=True, whole_batch=True)
def fog(images: torch.Tensor, param: tuple, rng: RandomSource) -> torch.Tensor:
    """Plasma-fractal haze.

    The scripts use a 32 px (CIFAR) or 256 px (ImageNet, cropped to 224) map; in general the
    smallest power of two covering the image, which gives exactly those two sizes. The maps
    are built for the whole batch at once (their cost is per level, not per pixel).
    """
    strength, decay = param
    b, _, h, w = images.shape
    mapsize = 1 << max(max(h, w) - 1, 1).bit_length()
    draw = lambda shape, lo, hi: rng.uniform((b, *shape), lo, hi)  # noqa: E731
    plasma = plasma_fractal(b, mapsize, decay, draw, images.device)
    return per_chunk(images, lambda rows: fog_blend(images[rows], plasma[rows], strength))


def snow_blend(
    images: torch.Tensor, layer: torch.Tensor, param: tuple, angles: torch.Tensor
) -> torch.Tensor:
    """Everything of snow after the random draws, given the N(loc, scale) layer (B, H, W).

    Replays the script: clipped zoom of the layer (float64), threshold, truncation to an 8-bit
    PNG, ImageMagick motion blur, then ``blend * x + (1 - blend) * max(x, 1.5 * gray + .5)`` in
    float32 (the image is read as float32, gray is OpenCV's float32 RGB2GRAY) and the blurred
    layer added twice (as is and rotated 180 degrees) in float64.
    """
    _, _, zoom, threshold, radius, sigma, blend = param
    layer = clipped_zoom(layer[:, None].to(images.device), zoom)
    layer = torch.where(layer < threshold, 0.0, layer)
    layer8 = (layer.clamp(0, 1) * 255).floor_().to(torch.uint8)
    flakes = magick_motion_blur(layer8, radius, sigma, angles).to(torch.float64) / 255.0
    x = to_unit(images, torch.float32)
    gray = rgb_to_gray_float32(x)
    x = blend * x + (1 - blend) * torch.maximum(x, gray * 1.5 + 0.5)
    return to_uint8(x.to(torch.float64) + flakes + flakes.flip(-2, -1))


@register("snow", random=True)
def snow(images: torch.Tensor, param: tuple, rng: RandomSource) -> torch.Tensor:
    """Snow flakes (thresholded Gaussian noise, motion-blurred at U(-135, -45) degrees)."""
    loc, scale = param[:2]
    b, _, h, w = images.shape
    layer = rng.normal((b, h, w), mean=loc, std=scale)
    angles = rng.uniform((b,), -135.0, -45.0)
    return snow_blend(images, layer, param, angles)


@register("brightness", random=False)
def brightness(images: torch.Tensor, shift: float, rng: RandomSource) -> torch.Tensor:
    """HSV value ``v = clip(v + shift, 0, 1)`` through skimage's rgb2hsv / hsv2rgb."""
    hsv = rgb_to_hsv(to_unit(images))
    hsv = torch.cat((hsv[:, :2], (hsv[:, 2:] + shift).clamp(0, 1)), 1)
    return to_uint8(hsv_to_rgb(hsv))
