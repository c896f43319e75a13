"""jpeg_compression's two codecs: torchvision's libjpeg-turbo where it is Pillow, else Pillow.

The corruption is Pillow's JPEG round trip. ``digital.torchvision_jpeg_is_pillow`` decides per
quality and image size whether torchvision's faster C++ loop gives the same file and pixels;
these tests hold both routes to the per-image Pillow reference, check that the fast route is
the one taken where the probe agrees, and that a codec which disagrees on the probe (in its
file or in its decoded pixels) is not used.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ttabench.data.corruptions import (
    TABLES,
    corrupt,
    corruption_fingerprint,
    corruption_provenance,
    digital,
    reference,
)

QUALITIES = sorted(
    set(TABLES["jpeg_compression"]["cifar"] + TABLES["jpeg_compression"]["imagenet"])
)
CIFAR_SEV3 = TABLES["jpeg_compression"]["cifar"][2]


def images(n: int, h: int, w: int, seed: int = 0) -> torch.Tensor:
    """Noise on one half, smooth ramps on the other: both kinds of 8 x 8 blocks."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, h, w), dtype=np.uint8)
    ramp = np.linspace(0, 255, h * (w // 2)).reshape(h, w // 2).astype(np.uint8)
    x[..., : w // 2] = ramp
    return torch.from_numpy(x)


def pillow_reference(x: torch.Tensor, quality: int) -> torch.Tensor:
    out = [reference.jpeg_compression(img, quality) for img in x.permute(0, 2, 3, 1).numpy()]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2)


@pytest.fixture
def fresh_probe():
    digital.torchvision_jpeg_is_pillow.cache_clear()
    yield
    digital.torchvision_jpeg_is_pillow.cache_clear()


def fast_route_or_skip(quality: int, h: int, w: int) -> None:
    if not digital.torchvision_jpeg_is_pillow(quality, h, w):
        pytest.skip("this torchvision build's JPEG differs from Pillow's; Pillow is used")


@pytest.mark.parametrize("quality", QUALITIES)
def test_torchvision_codec_gives_the_reference(quality):
    """Odd sizes: partial 16 x 16 MCUs at the edges."""
    fast_route_or_skip(quality, 33, 40)
    x = images(5, 33, 40, seed=quality)
    assert torch.equal(digital._torchvision_jpeg(x, quality), pillow_reference(x, quality))


def test_the_fast_route_is_taken_where_the_probe_agrees(monkeypatch):
    fast_route_or_skip(CIFAR_SEV3, 32, 32)

    def pillow_must_not_run(*args):
        raise AssertionError("Pillow ran although torchvision gives its bytes")

    monkeypatch.setattr(digital, "_pillow_jpeg", pillow_must_not_run)
    x = images(4, 32, 32, seed=2)
    assert torch.equal(corrupt(x, "jpeg_compression", 3), pillow_reference(x, CIFAR_SEV3))


def test_pillow_route_gives_the_reference(monkeypatch):
    monkeypatch.setattr(digital, "torchvision_jpeg_is_pillow", lambda q, h, w: False)
    x = images(3, 32, 32, seed=1)
    assert torch.equal(corrupt(x, "jpeg_compression", 3), pillow_reference(x, CIFAR_SEV3))
    for quality in (QUALITIES[0], QUALITIES[-1]):
        assert torch.equal(digital._pillow_jpeg(x, quality), pillow_reference(x, quality))


def _break_decoder(decoded: list[torch.Tensor]) -> list[torch.Tensor]:
    out = [d.clone() for d in decoded]
    out[0][0, 0, 0] ^= 1  # one bit of one pixel
    return out


@pytest.mark.parametrize("fault", ["file", "pixels", "no image ops"])
def test_a_codec_that_differs_on_the_probe_is_not_used(fault, monkeypatch, fresh_probe):
    import torchvision.io

    encode, decode = torchvision.io.encode_jpeg, torchvision.io.decode_jpeg
    if fault == "file":  # another quantisation table: another file
        monkeypatch.setattr(
            torchvision.io, "encode_jpeg", lambda x, quality: encode(x, quality=quality - 1)
        )
    elif fault == "pixels":  # same file, another decoder
        monkeypatch.setattr(
            torchvision.io, "decode_jpeg", lambda files: _break_decoder(decode(files))
        )
    else:  # what torchvision raises when its image extension did not load

        def missing(*args, **kwargs):
            raise AttributeError("'_OpNamespace' 'image' object has no attribute 'encode_jpeg'")

        monkeypatch.setattr(torchvision.io, "encode_jpeg", missing)
    assert not digital.torchvision_jpeg_is_pillow(30, 32, 32)
    x = images(2, 32, 32)
    sev1 = TABLES["jpeg_compression"]["cifar"][0]
    assert torch.equal(corrupt(x, "jpeg_compression", 1), pillow_reference(x, sev1))


def test_empty_batch_keeps_its_shape():
    x = torch.zeros(0, 3, 32, 32, dtype=torch.uint8)
    assert corrupt(x, "jpeg_compression", 2).shape == (0, 3, 32, 32)


def test_provenance_names_the_codec():
    record = corruption_provenance(["jpeg_compression", "contrast"])
    assert "Pillow" in record["jpeg_backend"] and "torchvision" in record["jpeg_backend"]
    assert corruption_fingerprint("jpeg_compression") and not corruption_fingerprint("contrast")
