"""Tests of the batched Hendrycks & Dietterich (ICLR 2019) corruptions against per-image references.

Every check is parametrised over the registry, so a newly registered corruption is tested for
free: contract (dtype/shape/device), determinism, per-sample seeding (same output alone, in a
batch or shuffled), severity, and agreement with the numpy/scipy/Pillow/OpenCV reference of
``ttabench.data.corruptions.reference`` on identical random draws (exact or within 1 grey level);
the four noises are checked in distribution against exact expectations. frost runs on look-alike
textures written by the tests (``$TTA_FROST_DIR``), never the originals; spatter and the OpenCV
references need opencv-python-headless (skipped without it).
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats

from ttabench.data.corruptions import (
    COMMON_CORRUPTIONS,
    EXTRA_CORRUPTIONS,
    GROUPS,
    PROFILES,
    REGISTRY,
    TABLES,
    available_corruptions,
    blur,
    corrupt,
    frost,
    ops,
    reference,
    sample_generators,
    weather,
)
from ttabench.data.corruptions.blur import fft_size, glass_shuffle_index, zoom_factors
from ttabench.data.corruptions.color import hsv_to_rgb, rgb_to_hsv
from ttabench.data.corruptions.conformance import DRAWS, compare_with_reference
from ttabench.data.corruptions.ops import RandomSource

from .c_fixtures import write_frost_textures

HAS_CV2 = importlib.util.find_spec("cv2") is not None
NAMES = tuple(n for n in available_corruptions() if n != "spatter" or HAS_CV2)
NEEDS_CV2 = ("frost", "spatter")  # their references call OpenCV (cv2.imread, Canny, ...)
NOISES = ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise")
SIZE = {"cifar": 32, "imagenet": 64}  # ImageNet tables on 64 px keep the suite fast; 224 is slow
# 0 grey levels: integer pipelines, and frost / spatter whose float steps replay the scripts'
EXACT = ("pixelate", "jpeg_compression", "motion_blur", "frost", "spatter")
# MAD does not grow from severity 1 to 5 by design: elastic sev 1 (CIFAR; 1-2 ImageNet) is a
# large near-rigid warp, saturate sev 1-2 desaturate while 3-5 oversaturate.
NOT_MONOTONE = ("elastic_transform", "saturate")


def natural_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Smooth colour gradients, a sharp-edged disc, a sinusoidal texture, flat and 0/255 patches."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1)
    out = []
    for i in range(n):
        a = rng.uniform(0, 2 * np.pi)
        t = ((np.cos(a) * xx + np.sin(a) * yy + 1.5) / 3)[..., None]
        img = rng.uniform(0, 1, 3) * (1 - t) + rng.uniform(0, 1, 3) * t
        cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 1, 3)
        f = rng.uniform(4, 10)
        tex = 0.5 + 0.5 * np.sin(2 * np.pi * f * xx) * np.sin(2 * np.pi * f * yy)
        third = slice(0, size // 3)
        img[third, third] = tex[third, third, None] * rng.uniform(0, 1, 3)
        img[-size // 4 :, -size // 4 :] = rng.uniform(0, 1, 3)
        img[-size // 8 :, : size // 8] = float(i % 2)
        out.append(np.clip(np.round(img * 255), 0, 255).astype(np.uint8))
    return np.stack(out)


def to_torch(hwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(hwc).permute(0, 3, 1, 2).contiguous()


def to_numpy(bchw: torch.Tensor) -> np.ndarray:
    return bchw.permute(0, 2, 3, 1).cpu().numpy()


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors on a 2-core machine shared with other jobs: intra-op threads only add
    contention (the suite runs ~6x faster on one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", autouse=True)
def frost_textures(tmp_path_factory):
    """Look-alike frost textures (sizes and formats of the originals) via $TTA_FROST_DIR."""
    folder = write_frost_textures(tmp_path_factory.mktemp("frost"))
    mp = pytest.MonkeyPatch()
    mp.setenv(frost.ENV_VAR, str(folder))
    yield folder
    mp.undo()


@pytest.fixture(scope="module")
def batches() -> dict[str, np.ndarray]:
    return {p: natural_images(4, SIZE[p], seed=1) for p in PROFILES}


# --- same draws for torch and reference (ttabench.data.corruptions.conformance) ---------------


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", [n for n in NAMES if n not in NOISES])  # noises: in distribution
def test_matches_reference(name, profile, batches):
    if REGISTRY[name].random and name not in DRAWS:
        pytest.fail(f"add a draws adapter for the random corruption {name!r} to DRAWS")
    if name in NEEDS_CV2:
        pytest.importorskip("cv2")
    tol = 0 if name in EXACT else 1
    for severity in range(1, 6):
        out, ref = compare_with_reference(name, batches[profile], profile, severity)
        diff = np.abs(out.astype(int) - ref.astype(int))
        assert diff.max() <= tol, (name, severity, diff.max())
        assert (diff > 0).mean() <= 1e-3, (name, severity, (diff > 0).mean())


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in NAMES if n not in NOISES])
def test_matches_reference_imagenet_224(name):
    if name in NEEDS_CV2:
        pytest.importorskip("cv2")
    imgs = natural_images(2, 224, seed=2)
    for severity in range(1, 6):
        out, ref = compare_with_reference(name, imgs, "imagenet", severity)
        assert np.abs(out.astype(int) - ref.astype(int)).max() <= (0 if name in EXACT else 1)


# --- noise distributions ----------------------------------------------------------------------


def _exact_noise_distribution(name: str, level: int, c: float) -> tuple[np.ndarray, np.ndarray]:
    """Support and probabilities of the output grey value for a flat input ``level``."""
    v = level / 255.0
    k = np.arange(256)
    if name in ("gaussian_noise", "speckle_noise"):
        std = c if name == "gaussian_noise" else v * c
        cdf = stats.norm.cdf(np.append(k[1:] / 255.0, np.inf), loc=v, scale=std)
        return k, np.diff(np.concatenate([[0.0], cdf[:-1], [1.0]]))
    if name == "shot_noise":
        n = np.arange(int(stats.poisson.ppf(1 - 1e-13, v * c)) + 1)
        return np.floor(np.clip(n / c, 0, 1) * 255), stats.poisson.pmf(n, v * c)
    base = np.floor(np.clip(v, 0, 1) * 255)  # impulse: an untouched byte (x / 255 * 255 = x)
    return np.array([0.0, 255.0, base]), np.array([c / 2, c / 2, 1 - c])


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", NOISES)
def test_noise_distribution(name, profile):
    levels = (40, 128, 220)
    x = torch.empty(16, 3, 3 * 16, 32, dtype=torch.uint8)
    for i, level in enumerate(levels):
        x[:, :, 16 * i : 16 * (i + 1)] = level
    for severity in range(1, 6):
        c = TABLES[name][profile][severity - 1]
        out = corrupt(x, name, severity, torch.Generator().manual_seed(severity), profile)
        for i, level in enumerate(levels):
            sample = out[:, :, 16 * i : 16 * (i + 1)].double().flatten().numpy()
            support, p = _exact_noise_distribution(name, level, c)
            mu = (support * p).sum()
            var = ((support - mu) ** 2 * p).sum()
            mu4 = ((support - mu) ** 4 * p).sum()
            n = sample.size
            assert abs(sample.mean() - mu) <= 5 * np.sqrt(var / n) + 1e-9, (severity, level)
            assert abs(sample.var() - var) <= 5 * np.sqrt(max(mu4 - var**2, 0) / n) + 1e-9


def test_impulse_noise_flips_channels_independently():
    x = torch.full((8, 3, 32, 32), 128, dtype=torch.uint8)
    out = corrupt(x, "impulse_noise", 5, torch.Generator().manual_seed(0))
    a = TABLES["impulse_noise"]["cifar"][4]
    base = int(np.uint8(128 / 255 * 255))
    any_flipped = (out != base).any(1).double().mean().item()
    assert abs(any_flipped - (1 - (1 - a) ** 3)) < 0.02, any_flipped


def test_impulse_noise_splits_salt_and_pepper_evenly():
    # One uniform per element: salt below amount / 2, pepper up to amount, else untouched.
    x = torch.full((4, 3, 64, 64), 128, dtype=torch.uint8)
    for severity, amount in enumerate(TABLES["impulse_noise"]["imagenet"], start=1):
        out = corrupt(
            x, "impulse_noise", severity, torch.Generator().manual_seed(severity), "imagenet"
        )
        counts = [(out == 255).sum().item(), (out == 0).sum().item(), (out == 128).sum().item()]
        assert sum(counts) == out.numel()
        expected = np.array([amount / 2, amount / 2, 1 - amount]) * out.numel()
        assert stats.chisquare(counts, expected).pvalue > 1e-4, (severity, counts)


@pytest.mark.parametrize(
    "name", ["shot_noise", "defocus_blur", "glass_blur", "fog", "frost", "pixelate"]
)
def test_chunking_never_changes_the_bytes(name, monkeypatch):
    # corrupt() slices per-sample batches (cache-sized chunks, or WHOLE_BATCH_ROWS for the
    # whole_batch ones) and concatenates; one image per slice must give the same bytes.
    from ttabench.data.corruptions import api, ops

    x = to_torch(natural_images(5, 64, seed=8))
    expected = corrupt(x, name, 2, sample_generators(1, name, 2, range(5)), "imagenet")
    monkeypatch.setattr(ops, "CPU_CHUNK_BYTES", 1)
    monkeypatch.setattr(api, "WHOLE_BATCH_ROWS", 2)
    got = corrupt(x, name, 2, sample_generators(1, name, 2, range(5)), "imagenet")
    assert torch.equal(got, expected)
    empty = ops.per_chunk(x[:0], lambda rows: x[rows])
    assert empty.shape == (0, *x.shape[1:])


# --- contract, determinism, severity ----------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_contract_and_determinism(name, batches):
    x = to_torch(batches["cifar"])
    before = x.clone()
    out = corrupt(x, name, 3, torch.Generator().manual_seed(7))
    assert out.dtype == torch.uint8 and out.shape == x.shape and out.device == x.device
    assert torch.equal(x, before), "input modified in place"
    again = corrupt(x, name, 3, torch.Generator().manual_seed(7))
    other = corrupt(x, name, 3, torch.Generator().manual_seed(8))
    assert torch.equal(out, again)
    assert torch.equal(out, other) != REGISTRY[name].random
    assert corrupt(x, name, 3).shape == x.shape  # global RNG
    assert corrupt(x[:0], name, 3).shape == (0, 3, 32, 32)
    rect = x[:2, :, :24, :]  # non-square images work too (parameters are in pixels)
    assert corrupt(rect, name, 5, torch.Generator().manual_seed(0)).shape == rect.shape


@pytest.mark.parametrize("name", [n for n in NAMES if not REGISTRY[n].random])
def test_deterministic_ones_are_per_image(name, batches):
    x = to_torch(batches["cifar"])
    assert torch.equal(corrupt(x, name, 4)[2:3], corrupt(x[2:3], name, 4))


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", NAMES)
def test_per_sample_generators_make_images_independent_of_their_batch(name, profile):
    # The spec's per-sample seeding: one image's output must not depend on the batch size,
    # the order or the other images, for the random corruptions too.
    x = to_torch(natural_images(5, SIZE[profile], seed=4))
    ids = [11, 3, 7, 0, 42]  # sample indices, as a dataset would key them

    def gens(rows):
        return sample_generators(9, name, 3, [ids[r] for r in rows])

    batch = corrupt(x, name, 3, gens(range(5)), profile)
    alone = torch.cat([corrupt(x[r : r + 1], name, 3, gens([r]), profile) for r in range(5)])
    order = [3, 0, 4, 1, 2]
    shuffled = corrupt(x[order], name, 3, gens(order), profile)
    assert torch.equal(batch, alone)
    assert torch.equal(shuffled, batch[order])
    if REGISTRY[name].random:  # the seed matters: other indices, other noise
        other = corrupt(x, name, 3, sample_generators(9, name, 3, range(5)), profile)
        assert not torch.equal(other, batch)


def test_per_sample_generators_must_match_the_batch():
    x = torch.zeros(3, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="2 generators for 3 images"):
        corrupt(x, "gaussian_noise", 1, sample_generators(0, "gaussian_noise", 1, range(2)))
    with pytest.raises(ValueError, match="torch.Generator"):
        corrupt(x, "gaussian_noise", 1, [0, 1, 2])


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", NAMES)
def test_degradation_grows_with_severity(name, profile):
    x = to_torch(natural_images(6, SIZE[profile], seed=3))
    mad = []
    for severity in range(1, 6):
        out = corrupt(x, name, severity, torch.Generator().manual_seed(0), profile)
        mad.append((out.double() - x.double()).abs().mean().item())
    assert min(mad) > 0.5, mad
    if name not in NOT_MONOTONE:
        assert mad[4] > mad[0], mad


# --- pieces with a known answer ---------------------------------------------------------------


def test_glass_loop_copies_instead_of_swapping():
    # The script's tuple "swap" of numpy views copies x[h', w'] into x[h, w] only.
    offsets = np.full((1, 4, 1, 2), -1)  # (dx, dy) = (-1, -1) at the 4 visited positions
    index = glass_shuffle_index(4, 4, 1, offsets)[0]
    expected = np.arange(16)
    expected[[15, 14, 11, 10]] = [10, 9, 6, 5]
    assert np.array_equal(index, expected)


def sequential_glass_index(h: int, w: int, delta: int, offsets: np.ndarray) -> np.ndarray:
    """The scripts' loop, one step at a time (the oracle for the wave schedule)."""
    n_iter, _, b, _ = offsets.shape
    index = np.repeat(np.arange(h * w)[None, :], b, axis=0)
    for it in range(n_iter):
        s = 0
        for hh in range(h - delta, delta, -1):
            for ww in range(w - delta, delta, -1):
                dx, dy = offsets[it, s, :, 0], offsets[it, s, :, 1]
                index[:, hh * w + ww] = index[np.arange(b), (hh + dy) * w + ww + dx]
                s += 1
    return index


@pytest.mark.parametrize(
    "h, w, delta, iterations", [(32, 32, 1, 2), (32, 32, 2, 3), (17, 23, 3, 2), (40, 31, 4, 2)]
)
def test_glass_waves_reproduce_the_sequential_loop(h, w, delta, iterations):
    # Offsets at the extremes (-delta and delta - 1) stress the overlap of neighbouring steps.
    rng = np.random.default_rng(h * w + delta)
    steps = (h - 2 * delta) * (w - 2 * delta)
    offsets = rng.choice([-delta, delta - 1, 0], size=(iterations, steps, 3, 2))
    offsets[..., 1, :] = rng.integers(-delta, delta, size=(iterations, steps, 2))
    expected = sequential_glass_index(h, w, delta, offsets)
    assert np.array_equal(glass_shuffle_index(h, w, delta, offsets), expected)
    assert not np.array_equal(expected, np.arange(h * w)[None].repeat(3, 0))  # pixels moved


def test_glass_index_is_the_same_in_int64():
    # index_dtype picks int32 below 2**31 entries; the int64 path (huge batches) agrees.
    rng = np.random.default_rng(0)
    offsets = rng.integers(-2, 2, size=(2, 28 * 28, 5, 2))
    fast = glass_shuffle_index(32, 32, 2, offsets)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(blur, "index_dtype", lambda size: np.int64)
        assert np.array_equal(glass_shuffle_index(32, 32, 2, offsets), fast)


@pytest.mark.parametrize("profile", PROFILES)
def test_glass_blur_shuffles_with_its_drawn_offsets(profile):
    # corrupt() builds the index from shifts in wave order (one pass for the whole batch); it
    # must equal glass_apply on the same draws, i.e. the loop the reference tests hold exact.
    x = torch.from_numpy(natural_images(5, SIZE[profile], seed=3)).permute(0, 3, 1, 2)
    x = x.contiguous()
    severity = 4
    sigma, delta, iterations = param = TABLES["glass_blur"][profile][severity - 1]
    h, w = x.shape[-2:]
    steps = (h - 2 * delta) * (w - 2 * delta)
    rng = RandomSource(sample_generators(7, "glass_blur", severity, range(5)), "cpu")
    offsets = rng.integers((5, iterations, steps, 2), -delta, delta)
    expected = blur.glass_apply(x, param, offsets.permute(1, 2, 0, 3))
    gens = sample_generators(7, "glass_blur", severity, range(5))
    assert torch.equal(corrupt(x, "glass_blur", severity, gens, profile), expected)


def test_hsv_conversions_replay_skimage_on_ties_and_greys():
    # Every max/min tie among {0, 1, 127, 128, 254, 255}^3 (greys included), plus random pixels.
    vals = np.array([0, 1, 127, 128, 254, 255])
    grid = np.stack(np.meshgrid(vals, vals, vals, indexing="ij"), -1).reshape(-1, 3)
    pixels = np.concatenate([grid, np.random.default_rng(0).integers(0, 256, (4096, 3))]) / 255
    as_image = torch.from_numpy(pixels.T.copy())[None, :, :, None]  # (1, 3, N, 1)
    hsv = reference.rgb2hsv(pixels)
    assert np.array_equal(rgb_to_hsv(as_image)[0, :, :, 0].numpy().T, hsv)
    hsv[: len(vals), 0] = np.arange(len(vals)) / 6  # hues on the sector borders
    back = hsv_to_rgb(torch.from_numpy(hsv.T.copy())[None, :, :, None])[0, :, :, 0].numpy().T
    assert np.array_equal(back, reference.hsv2rgb(hsv))


def test_fft_size_is_the_next_5_smooth_length():
    def smooth(n: int) -> bool:
        for p in (2, 3, 5):
            while n % p == 0:
                n //= p
        return n == 1

    for n in range(1, 400):
        assert fft_size(n) == next(m for m in range(n, 2 * n + 1) if smooth(m))
    assert fft_size(238) == 240  # 224 px + 2 * 7 (defocus sev 3): 238 = 2 * 7 * 17 is slow


def test_zoom_depends_on_its_geometry_only():
    """zoom_blur computes one zoom per run of factors sharing a crop and size: they must agree."""
    x = torch.from_numpy(natural_images(2, 32, seed=3)).permute(0, 3, 1, 2).float() / 255
    factors = zoom_factors(*TABLES["zoom_blur"]["cifar"][2]).tolist()
    runs: dict = {}
    for z in factors:
        runs.setdefault(ops.zoom_geometry(32, 32, z), []).append(z)
    assert len(runs) == 9 and ops.zoom_geometry(32, 32, 1.0) == (32, 32, 32, 32)
    for zs in runs.values():
        assert all(torch.equal(ops.clipped_zoom(x, z), ops.clipped_zoom(x, zs[0])) for z in zs)
    # A crop resized to its own size is the crop, as the float64 interpolation gives it.
    ch, cw, zh, zw = ops.zoom_geometry(32, 32, 1.01)
    assert (ch, cw) == (zh, zw) == (32, 32)
    interpolated = F.interpolate(
        x.reshape(-1, 1, 32, 32).double(), size=(32, 32), mode="bilinear", align_corners=True
    )
    assert torch.equal(ops.clipped_zoom(x, 1.01), interpolated.float().reshape(x.shape))


def test_quantum_to_uint8_is_integer_division():
    q = torch.arange(65536, dtype=torch.float64)
    expected = torch.div(torch.arange(65536), 257, rounding_mode="floor").to(torch.uint8)
    assert torch.equal(ops.quantum_to_uint8(q), expected)


def test_plasma_is_normalised():
    g = torch.Generator().manual_seed(0)

    def draw(shape, lo, hi):
        return lo + (hi - lo) * torch.rand(3, *shape, generator=g, dtype=torch.float64)

    m = weather.plasma_fractal(3, 32, 2.0, draw)
    assert m.shape == (3, 32, 32)
    assert torch.equal(m.amin((1, 2)), torch.zeros(3, dtype=torch.float64))
    assert torch.equal(m.amax((1, 2)), torch.ones(3, dtype=torch.float64))


def test_tables_and_names():
    assert list(COMMON_CORRUPTIONS) == (
        "gaussian_noise shot_noise impulse_noise defocus_blur glass_blur motion_blur zoom_blur "
        "snow frost fog brightness contrast elastic_transform pixelate jpeg_compression"
    ).split(" ")
    assert EXTRA_CORRUPTIONS == ("speckle_noise", "gaussian_blur", "spatter", "saturate")
    assert set(GROUPS) == set(TABLES) == set(COMMON_CORRUPTIONS + EXTRA_CORRUPTIONS)
    for rows in TABLES.values():
        assert set(rows) == set(PROFILES) and all(len(r) == 5 for r in rows.values())
    counts = {p: [len(zoom_factors(*z)) for z in TABLES["zoom_blur"][p]] for p in PROFILES}
    assert counts == {"cifar": [7, 12, 16, 21, 26], "imagenet": [12, 16, 11, 13, 11]}
    assert TABLES["gaussian_noise"]["cifar"] == (0.04, 0.06, 0.08, 0.09, 0.10)
    assert TABLES["jpeg_compression"]["imagenet"] == (25, 18, 15, 10, 7)
    # frost: (image weight, texture weight, texture resize); CIFAR shrinks the textures x0.2
    assert TABLES["frost"]["cifar"][2] == (0.9, 0.4, 0.2)
    assert {p[2] for p in TABLES["frost"]["imagenet"]} == {1}
    assert TABLES["spatter"]["cifar"][3] == (0.65, 0.1, 0.7, 0.69, 0.6, 1)
    assert set(available_corruptions()) == set(TABLES)


# --- errors -----------------------------------------------------------------------------------


def test_errors():
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ValueError, match="gaussian_noise"):
        corrupt(x, "gaussian", 1)
    for bad in (0, 6, 2.0, True, "3"):
        with pytest.raises(ValueError, match="severity"):
            corrupt(x, "contrast", bad)
    with pytest.raises(ValueError, match="profile"):
        corrupt(x, "contrast", 1, profile="tiny")
    with pytest.raises(ValueError):
        corrupt(x.float(), "contrast", 1)
    with pytest.raises(ValueError):
        corrupt(x[:, :1], "contrast", 1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu(name, batches):
    x = to_torch(batches["cifar"])
    cpu = corrupt(x, name, 5, torch.Generator().manual_seed(0))
    gpu = corrupt(x.cuda(), name, 5, torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda"
    diff = (gpu.cpu().int() - cpu.int()).abs()
    assert diff.max() <= (0 if name in EXACT else 1)
