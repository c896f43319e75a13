"""frost and spatter of Hendrycks & Dietterich (ICLR 2019): their optional pieces and quirks.

The shared checks (reference agreement, range, determinism, per-sample seeding, severity) run in
``test_corruptions.py``; here: where frost's textures come from (``$TTA_FROST_DIR``, an installed
wheel, else a clear error), its draws (only ``frost1..frost5``, crops inside the texture), the
OpenCV resize it replays, the real textures when a wheel is installed, and spatter's OpenCV
requirement and script quirks (uint8 wrap-around of the layer, the 0/0 of an empty layer).
"""

from __future__ import annotations

import importlib.metadata
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from ttabench.data.corruptions import (
    TABLES,
    CorruptionUnavailableError,
    corrupt,
    corruption_provenance,
    frost,
    reference,
    spatter,
    unavailable_reason,
)

from .c_fixtures import FROST_FILES, write_frost_textures


@pytest.fixture(scope="module")
def texture_dir(tmp_path_factory):
    return write_frost_textures(tmp_path_factory.mktemp("frost"))


@pytest.fixture
def textures(monkeypatch, texture_dir):
    monkeypatch.setenv(frost.ENV_VAR, str(texture_dir))
    return texture_dir


def hide_wheels(monkeypatch):
    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(frost, "_distribution", missing)


def images(n: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g)


# --- frost: texture sources -------------------------------------------------------------------


def test_frost_reads_textures_from_the_env_folder_and_records_them(textures):
    source = frost.find_textures()
    assert source.origin == f"{frost.ENV_VAR}={textures}"
    assert [p.name for p in source.files] == list(frost.TEXTURE_NAMES)
    assert not source.is_original  # look-alikes, not the photographs
    record = corruption_provenance(["contrast", "frost"])
    assert str(textures) in record["frost_textures"]
    assert record["frost_textures_sha256"].startswith(source.sha256[:12])
    assert "not the originals" in record["frost_textures_sha256"]


def test_frost_texture_hash_follows_the_content(textures, tmp_path, monkeypatch):
    before = frost.find_textures().sha256
    other = write_frost_textures(tmp_path / "other", seed=6)
    monkeypatch.setenv(frost.ENV_VAR, str(other))
    assert frost.find_textures().sha256 != before


def test_missing_frost_textures_are_a_clear_error(monkeypatch, tmp_path):
    x = images(2)
    monkeypatch.setenv(frost.ENV_VAR, str(tmp_path))  # an empty folder
    with pytest.raises(CorruptionUnavailableError, match="lacks frost1.png, frost2.png"):
        corrupt(x, "frost", 1)
    monkeypatch.delenv(frost.ENV_VAR)
    hide_wheels(monkeypatch)
    with pytest.raises(CorruptionUnavailableError) as info:
        corrupt(x, "frost", 1)
    message = str(info.value)
    assert "pip install 'imagecorruptions>=1.1.2'" in message
    assert frost.ENV_VAR in message and "frost5.jpg" in message
    assert "pip install" in unavailable_reason("frost")
    assert unavailable_reason("contrast") is None


def test_frost_draws_one_of_the_first_five_textures_and_crops_inside(textures, monkeypatch):
    seen = {}

    def record(images, param, which, starts, pool=None):
        seen.update(which=which, starts=starts)
        return images

    monkeypatch.setattr(frost, "frost_apply", record)
    n = 400
    corrupt(images(n), "frost", 2, torch.Generator().manual_seed(0))
    which, starts = seen["which"], seen["starts"]
    assert set(which.tolist()) == {0, 1, 2, 3, 4}  # randint(5): never frost6
    _, sizes = frost.texture_pool(0.2, "cpu")
    room = sizes[which] - 32  # randint(0, H_t - 32): the last offset is excluded
    assert (starts >= 0).all() and (starts < room).all()
    assert (starts < room // 2).any() and (starts >= room // 2).any()


def test_frost_textures_must_be_larger_than_the_images(textures):
    with pytest.raises(ValueError, match="must be larger than the 80x80 images"):
        corrupt(images(1, 80), "frost", 1)  # CIFAR: 315 x 0.2 = 63 rows
    assert corrupt(images(1, 80), "frost", 1, profile="imagenet").shape == (1, 3, 80, 80)


def test_frost_decodes_pngs_without_alpha_like_opencv(textures):
    cv2 = pytest.importorskip("cv2")
    pool, sizes = frost.texture_pool(1, "cpu")  # ImageNet: no resize
    for i, (name, (w, h, mode)) in enumerate(FROST_FILES.items()):
        with Image.open(textures / name) as im:
            assert im.mode == mode and im.size == (w, h) and sizes[i].tolist() == [h, w]
        bgr = cv2.imread(str(textures / name))  # IMREAD_COLOR: BGR, alpha dropped
        assert np.array_equal(pool[i, :, :h, :w].permute(1, 2, 0).numpy(), bgr[..., ::-1])


def test_cv_resize_linear_replays_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    for h, w in [(600, 900), (315, 560), (350, 527), (123, 257)]:
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for scale, tol in [(0.2, 0), (1 / 3, 0), (0.3, 1), (0.37, 1)]:
            ours = frost.cv_resize_linear(torch.from_numpy(img).permute(2, 0, 1), scale)
            theirs = cv2.resize(img, (0, 0), fx=scale, fy=scale)
            diff = np.abs(ours.permute(1, 2, 0).numpy().astype(int) - theirs)
            assert diff.max() <= tol, (h, w, scale, diff.max())


def test_installed_wheel_holds_the_original_textures(monkeypatch):
    monkeypatch.delenv(frost.ENV_VAR, raising=False)
    try:
        source = frost.find_textures()
    except CorruptionUnavailableError:
        pytest.skip("no imagecorruptions(-imaug) wheel installed")
    assert source.is_original and "wheel" in source.origin
    for path, (w, h, _) in zip(source.files, FROST_FILES.values(), strict=True):
        with Image.open(path) as im:
            assert im.size == (w, h)  # sizes of spec 2.7
    assert (
        "the hendrycks/robustness originals" in frost.describe_textures()["frost_textures_sha256"]
    )
    cv2 = pytest.importorskip("cv2")
    pool, sizes = frost.texture_pool(0.2, "cpu")
    for i, path in enumerate(source.files):  # decode and x0.2 resize exactly as the script
        expected = cv2.resize(cv2.imread(str(path)), (0, 0), fx=0.2, fy=0.2)[..., ::-1]
        h, w = sizes[i].tolist()
        assert np.array_equal(pool[i, :, :h, :w].permute(1, 2, 0).numpy(), expected)


# --- spatter ----------------------------------------------------------------------------------


def test_spatter_without_opencv_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)  # makes `import cv2` raise ImportError
    with pytest.raises(CorruptionUnavailableError, match="pip install opencv-python-headless"):
        corrupt(images(1), "spatter", 1)
    assert "opencv" in unavailable_reason("spatter")
    assert corrupt(images(1), "contrast", 1).shape == (1, 3, 32, 32)  # the rest still works


def _vs_reference(x: torch.Tensor, param: tuple, layer: np.ndarray) -> tuple:
    ours = spatter.spatter_apply(x, param, torch.from_numpy(layer)).permute(0, 2, 3, 1).numpy()
    imgs = x.permute(0, 2, 3, 1).numpy()
    ref = np.stack(
        [reference.spatter(im, param, None, la) for im, la in zip(imgs, layer, strict=True)]
    )
    return ours, ref


def test_spatter_water_layer_wraps_around_like_numpys_uint8_cast():
    pytest.importorskip("cv2")
    param = TABLES["spatter"]["cifar"][2]
    layer = np.full((2, 32, 32), 1.1)  # smoothed 1.1 * 255 = 280.5 -> uint8 24, not 255
    layer[:, 8:20, 8:20] = 0.9
    ours, ref = _vs_reference(images(2), param, layer)
    assert np.array_equal(ours, ref)
    clipped = spatter.spatter_apply(images(2), param, torch.from_numpy(np.minimum(layer, 1.0)))
    assert not np.array_equal(clipped.permute(0, 2, 3, 1).numpy(), ours)


def test_spatter_without_any_water_gives_the_scripts_black_image():
    pytest.importorskip("cv2")
    param = TABLES["spatter"]["cifar"][0]
    ours, ref = _vs_reference(images(2), param, np.zeros((2, 32, 32)))  # 0 / 0 in the script
    assert np.array_equal(ours, ref) and not ours.any()


def test_spatter_mud_paints_only_where_the_mask_is_dense():
    pytest.importorskip("cv2")
    param = TABLES["spatter"]["cifar"][4]  # mud
    layer = np.zeros((1, 32, 32))
    layer[0, 10:22, 10:22] = 1.0
    x = images(1)
    ours, ref = _vs_reference(x, param, layer)
    assert np.array_equal(ours, ref)
    changed = (ours != x.permute(0, 2, 3, 1).numpy()).any(-1)[0]
    assert changed[16, 16] and not changed[:5].any() and not changed[:, :5].any()
    assert np.abs(ours[0, 16, 16].astype(int) - (63, 42, 20)).max() <= 1  # mud brown
