"""Frost of Hendrycks & Dietterich (ICLR 2019), batched in torch; textures found at run time.

"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" blends the image
with a random crop of one of five frost photographs: ``idx = np.random.randint(5)`` (so
``frost6.jpg`` is never used), ``cv2.imread`` (BGR, alpha dropped) -> for CIFAR ``cv2.resize(fx=
fy=0.2)`` (INTER_LINEAR) -> crop at ``randint(0, H_t - h)``, ``randint(0, W_t - w)`` -> BGR to
RGB -> ``np.clip(c0 * x + c1 * crop, 0, 255)`` -> ``np.uint8`` (truncation). ImageNet crops the
full-size photograph.

The photographs carry no licence of their own (spec 2.7), so they are never shipped here; they
are read at run time from ``$TTA_FROST_DIR`` (a folder with ``frost1.png`` .. ``frost5.jpg``) or,
without it, from an installed ``imagecorruptions`` (Apache-2.0, a dependency of ttabench) or
``imagecorruptions-imaug`` wheel, located through its ``importlib.metadata`` file list (the
package itself is never imported). They are decoded with Pillow (``convert("RGB")`` drops the
always-opaque alpha channel like ``cv2.imread`` does; checked identical to OpenCV's decode for
all six files).
Fidelity: exact given the files. The x0.2 resize is OpenCV's half-pixel bilinear map; at
scale 5 it samples pixel centres ``5 i + 2`` exactly, so the published textures resize without
rounding (other textures: within 1 grey level of OpenCV's fixed-point weights).
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .ops import RandomSource, per_chunk
from .registry import CorruptionUnavailableError, register

ENV_VAR = "TTA_FROST_DIR"
#: The five textures the originals draw from (``randint(5)``), in their index order.
TEXTURE_NAMES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")
#: Wheels carrying ``imagecorruptions/frost/frost{1..6}``, in order of preference.
DISTRIBUTIONS = ("imagecorruptions", "imagecorruptions-imaug")
#: ``textures_sha256`` of hendrycks/robustness's files (byte-identical in both wheels).
ORIGINAL_SHA256 = "0964beb5b8aee4a0b88bc055fc9883fbab7a2d552dc85ec9ec907eca3a433201"


@dataclass(frozen=True)
class TextureSource:
    """Where the frost textures were found: ``origin`` (env var or wheel), files, content hash."""

    origin: str
    files: tuple[Path, ...]
    sha256: str

    @property
    def is_original(self) -> bool:
        """Whether the files are byte-identical to the originals of hendrycks/robustness."""
        return self.sha256 == ORIGINAL_SHA256


def textures_sha256(files: tuple[Path, ...]) -> str:
    """SHA-256 over ``name + sha256(bytes)`` of each texture, in index order."""
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode() + hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def _distribution(name: str) -> metadata.Distribution:
    return metadata.distribution(name)  # a seam for tests that hide the wheel


def _wheel_files(name: str) -> tuple[Path, ...] | None:
    try:
        dist = _distribution(name)
    except metadata.PackageNotFoundError:
        return None
    listed = {str(f).replace("\\", "/"): f for f in dist.files or ()}
    paths = []
    for texture in TEXTURE_NAMES:
        entry = listed.get(f"imagecorruptions/frost/{texture}")
        path = Path(dist.locate_file(entry)) if entry is not None else None
        if path is None or not path.is_file():
            return None
        paths.append(path)
    return tuple(paths)


_HOW = (
    f"ttabench does not ship them (they have no licence of their own) but depends on the "
    f"imagecorruptions wheel that carries them: pip install 'imagecorruptions>=1.1.2' (missing "
    f"if ttabench was installed with --no-deps), or set {ENV_VAR} to a folder holding "
    f"{', '.join(TEXTURE_NAMES)}"
)


def find_textures() -> TextureSource:
    """The frost textures: ``$TTA_FROST_DIR`` if set, else an installed wheel.

    Raises:
        CorruptionUnavailableError: none found (or ``$TTA_FROST_DIR`` lacks files), with both
            ways to get them.
    """
    folder = os.environ.get(ENV_VAR)
    if folder:
        files = tuple(Path(folder) / t for t in TEXTURE_NAMES)
        missing = [p.name for p in files if not p.is_file()]
        if missing:
            raise CorruptionUnavailableError(
                f"frost: {ENV_VAR}={folder} lacks {', '.join(missing)}. The frost textures "
                f"of Hendrycks & Dietterich are needed; {_HOW}"
            )
        return TextureSource(f"{ENV_VAR}={folder}", files, _cached_sha(_file_key(files)))
    for name in DISTRIBUTIONS:
        files = _wheel_files(name)
        if files is not None:
            origin = f"{name} {_distribution(name).version} wheel"
            return TextureSource(origin, files, _cached_sha(_file_key(files)))
    raise CorruptionUnavailableError(
        f"frost needs the frost textures of Hendrycks & Dietterich ({', '.join(TEXTURE_NAMES)}) "
        f"and found none ({ENV_VAR} unset, no {' / '.join(DISTRIBUTIONS)} wheel); {_HOW}"
    )


def _file_key(files: tuple[Path, ...]) -> tuple[tuple[str, int, int], ...]:
    """Paths with size and mtime, so edited files are re-read and re-hashed."""
    return tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files)


@lru_cache(maxsize=8)
def _cached_sha(key: tuple[tuple[str, int, int], ...]) -> str:
    return textures_sha256(tuple(Path(k[0]) for k in key))


def check_textures() -> None:
    """Raise :class:`CorruptionUnavailableError` unless the textures can be found."""
    find_textures()


def describe_textures() -> dict[str, str]:
    """Provenance: texture source, folder and short SHA-256 (and whether they are the originals)."""
    source = find_textures()
    tag = "the hendrycks/robustness originals" if source.is_original else "not the originals"
    return {
        "frost_textures": f"{source.origin}: {source.files[0].parent}",
        "frost_textures_sha256": f"{source.sha256[:12]} ({tag})",
    }


def cv_resize_linear(image: torch.Tensor, scale: float) -> torch.Tensor:
    """``cv2.resize(img, (0, 0), fx=scale, fy=scale)`` (INTER_LINEAR) of uint8 (C, H, W).

    Output sizes are ``round(n * scale)``; output pixel ``i`` reads source position
    ``(i + 0.5) / scale - 0.5`` (half-pixel centres, no anti-aliasing, edge clamped), i.e.
    ``F.interpolate(bilinear, align_corners=False, antialias=False)`` with the scale kept,
    evaluated in float64 and rounded.
    """
    out = image.to(torch.float64)
    inv = 1.0 / scale  # OpenCV's scale_x = 1. / inv_scale_x (5.0 exactly for fx = 0.2)
    for dim in (-2, -1):
        n = out.shape[dim]
        pos = (torch.arange(round(n * scale), dtype=torch.float64) + 0.5) * inv - 0.5
        i0 = torch.floor(pos)
        t = torch.where((i0 < 0) | (i0 >= n - 1), 0.0, pos - i0)
        i0 = i0.clamp(0, n - 1).long()
        i1 = (i0 + 1).clamp(max=n - 1)
        shape = [1] * out.dim()
        shape[dim] = -1
        t = t.reshape(shape)
        out = out.index_select(dim, i0) * (1 - t) + out.index_select(dim, i1) * t
    return torch.floor(out + 0.5).clamp_(0, 255).to(torch.uint8)


@lru_cache(maxsize=8)
def _decoded(key: tuple[tuple[str, int, int], ...], scale: float) -> tuple[torch.Tensor, ...]:
    out = []
    for path, _, _ in key:
        with Image.open(path) as im:
            rgb = torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1)
        out.append(rgb if scale == 1 else cv_resize_linear(rgb, scale))
    return tuple(out)


@lru_cache(maxsize=8)
def _pool(key: tuple, scale: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    textures = _decoded(key, scale)
    sizes = torch.tensor([t.shape[1:] for t in textures])
    pool = torch.zeros(len(textures), 3, *sizes.amax(0).tolist(), dtype=torch.uint8)
    for i, t in enumerate(textures):
        pool[i, :, : t.shape[1], : t.shape[2]] = t
    return pool.to(device), sizes.to(device)


def texture_pool(scale: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The 5 textures (resized by ``scale``) zero-padded into (5, 3, H, W) uint8, and sizes."""
    return _pool(_file_key(find_textures().files), float(scale), torch.device(device))


def frost_apply(
    images: torch.Tensor,
    param: tuple,
    which: torch.Tensor,
    starts: torch.Tensor,
    pool: torch.Tensor | None = None,
) -> torch.Tensor:
    """Blend each image with texture ``which[i]`` cropped at ``starts[i] = (row, col)``.

    ``pool``: ``texture_pool(param[2], ...)[0]`` if the caller has it (finding the textures
    reads the wheel's file list, ~2 ms).
    """
    img_w, frost_w, scale = param
    h, w = images.shape[-2:]
    if pool is None:
        pool, _ = texture_pool(scale, images.device)
    corners = zip(which.tolist(), starts.tolist(), strict=True)
    # slices: a gather of the whole batch is 3x slower on the CPU
    crops = torch.stack([pool[k, :, r : r + h, c : c + w] for k, (r, c) in corners])

    def blend(rows: slice) -> torch.Tensor:  # float64, as numpy
        out = img_w * images[rows].to(torch.float64) + frost_w * crops[rows].to(torch.float64)
        return out.clamp_(0, 255).floor_().to(torch.uint8)

    return per_chunk(images, blend)


@register("frost", random=True, check=check_textures, describe=describe_textures, whole_batch=True)
def frost(images: torch.Tensor, param: tuple, rng: RandomSource) -> torch.Tensor:
    """Frost: ``c0 * x + c1 * crop`` of a random texture (``param = (c0, c1, texture scale)``).

    Draws per sample: the texture index (``randint(5)``), then the crop corner, uniform on
    ``[0, H_t - h) x [0, W_t - w)`` like the originals' ``randint`` (last offset excluded).
    """
    b, _, h, w = images.shape
    pool, sizes = texture_pool(param[2], images.device)
    if (sizes[:, 0] <= h).any() or (sizes[:, 1] <= w).any():
        raise ValueError(
            f"frost: textures {sizes.tolist()} (after the x{param[2]} resize) must be larger than "
            f"the {h}x{w} images"
        )
    which = rng.integers((b,), 0, len(TEXTURE_NAMES)).to(sizes.device)
    u = rng.uniform((b, 2), 0.0, 1.0).to(sizes.device)
    ranges = sizes[which] - torch.tensor([h, w], device=sizes.device)
    starts = torch.floor(u * ranges.to(u.dtype)).long()
    return frost_apply(images, param, which, starts, pool)
