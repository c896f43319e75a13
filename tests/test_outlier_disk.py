"""STAMP's corrupted OOD sets from disk (ttabench/data/outliers/disk.py), on tiny files written
in the real formats: SVHN's .mat and ImageFolder trees of PNG / JPEG files."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ttabench.data.outliers import OutlierSource, WithOutliers, build_source
from ttabench.data.outliers.disk import DiskOutliers
from ttabench.domains import Domain

scipy_io = pytest.importorskip("scipy.io")

C, S = "gaussian_noise", 5
OOD = "gaussian_noise-5"


class Tiny:
    """Stand-in test set: 32x32 images under the given domains."""

    name, num_classes = "tiny", 10

    def __init__(self, domains=((C, S),), size=(32, 32), folder: Path | None = None) -> None:
        self.domains = [Domain(c, s) for c, s in domains]
        self.size = size
        if folder is not None:
            self.dir = folder

    def labels(self, domain: Domain) -> np.ndarray:
        return np.zeros(4, dtype=np.int64)

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        return torch.zeros((len(indices), 3, *self.size), dtype=torch.uint8)

    def provenance(self) -> dict[str, str]:
        return {"source": "tiny"}


def _rgb(rng: np.random.Generator, side: int) -> np.ndarray:
    return rng.integers(0, 256, (side, side, 3), dtype=np.uint8)


def _image_folder(base: Path, files: dict[str, np.ndarray]) -> None:
    """Write ``files`` (relative path -> HWC array) below ``base``, format by suffix."""
    for rel, array in files.items():
        path = base / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(path)


def _expected(base: Path, order: list[str], size: tuple[int, int] = (32, 32)) -> np.ndarray:
    """What STAMP's ImageFolder + Resize((size, size)) gives, as uint8 NCHW."""
    out = []
    for rel in order:
        with Image.open(base / rel) as img:
            img = img.convert("RGB")
            if img.size != size[::-1]:
                img = img.resize(size[::-1], Image.Resampling.BILINEAR)
            out.append(np.asarray(img))
    return np.stack(out).transpose(0, 3, 1, 2)


def _svhn(root: Path, n: int = 5, c: str = C, s: int = S) -> np.ndarray:
    x = np.random.default_rng(s).integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
    folder = root / "SVHN-C" / c / str(s)
    folder.mkdir(parents=True)
    scipy_io.savemat(folder / "test_32x32.mat", {"X": x, "y": np.arange(1, n + 1)[:, None]})
    return x


def test_svhn_c_reads_the_mat_in_order(tmp_path):
    x = _svhn(tmp_path)
    source = build_source("svhn_c", Tiny(), tmp_path)
    assert isinstance(source, DiskOutliers) and isinstance(source, OutlierSource)
    assert source.name == "svhn_c"
    domain = Domain(C, S, "svhn_c")
    labels = source.labels(domain)
    assert labels.dtype == np.int64 and labels.tolist() == [-1] * 5
    got = source.images(domain, np.array([0, 4, 2]))
    assert got.dtype == torch.uint8 and got.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(got.numpy(), x[..., [0, 4, 2]].transpose(3, 2, 0, 1))
    assert source.images(domain, np.zeros(0, np.int64)).shape == (0, 3, 32, 32)
    with pytest.raises(IndexError, match=r"0\.\.4"):
        source.images(domain, np.array([5]))
    record = source.provenance()
    assert record["source"] == "svhn_c" and len(record["fingerprint"]) == 16
    assert all(isinstance(v, str) for v in record.values())


def test_svhn_c_resizes_to_the_test_size(tmp_path):
    x = _svhn(tmp_path, n=2)
    source = build_source("svhn_c", Tiny(size=(24, 24)), tmp_path)
    got = source.images(Domain(C, S, "svhn_c"), np.array([1]))
    want = Image.fromarray(x[..., 1]).resize((24, 24), Image.Resampling.BILINEAR)
    np.testing.assert_array_equal(got[0].numpy(), np.asarray(want).transpose(2, 0, 1))


def test_lsun_c_imagefolder_order_and_first_n(tmp_path):
    rng = np.random.default_rng(0)
    base = tmp_path / "LSUN_resize-C" / C / str(S)
    names = ["b/10.png", "b/2.png", "a/z.png", "a/y.PNG", "a/sub/x.png"]
    _image_folder(base, {n: _rgb(rng, 32) for n in names})
    (base / "a" / "notes.txt").write_text("not an image")
    order = ["a/y.PNG", "a/z.png", "a/sub/x.png", "b/10.png", "b/2.png"]  # ImageFolder order
    source = build_source("lsun_c", Tiny(), tmp_path)
    domain = Domain(C, S, "lsun_c")
    assert source.labels(domain).tolist() == [-1] * 5
    np.testing.assert_array_equal(
        source.images(domain, np.arange(5)).numpy(), _expected(base, order)
    )
    first = source.images(domain, np.arange(2)).numpy()  # STAMP's Subset(range(N))
    np.testing.assert_array_equal(first, _expected(base, order[:2]))
    with pytest.raises(IndexError):
        source.images(domain, np.array([-1]))


def test_imagefolder_order_is_torchvisions(tmp_path):
    from torchvision.datasets import ImageFolder

    rng = np.random.default_rng(1)
    base = tmp_path / "PLACES365-C" / C / str(S)
    _image_folder(base, {f"{c}/{i}.png": _rgb(rng, 32) for c in ("q", "B", "a") for i in (3, 1)})
    source = build_source("places365_c", Tiny(), tmp_path)
    folder = ImageFolder(str(base))
    want = np.stack([np.asarray(folder[i][0]) for i in range(len(folder))]).transpose(0, 3, 1, 2)
    np.testing.assert_array_equal(source.images(Domain(C, S, "places365_c"), np.arange(6)), want)


def test_places365_c_resizes_larger_files_like_torchvision(tmp_path):
    from torchvision import transforms

    rng = np.random.default_rng(2)
    base = tmp_path / "PLACES365-C" / C / str(S)
    _image_folder(base, {"x/0.png": _rgb(rng, 40), "x/1.png": _rgb(rng, 40)})
    source = build_source("places365_c", Tiny(), tmp_path)
    got = source.images(Domain(C, S, "places365_c"), np.array([1, 0])).numpy()
    np.testing.assert_array_equal(got, _expected(base, ["x/1.png", "x/0.png"]))
    with Image.open(base / "x/1.png") as img:
        stamp = transforms.Resize((32, 32))(img.convert("RGB"))  # STAMP's OOD transform
    np.testing.assert_array_equal(got[0], np.asarray(stamp).transpose(2, 0, 1))


def test_textures_c_reads_the_images_folder(tmp_path):
    rng = np.random.default_rng(3)
    base = tmp_path / "Textures-C" / C / str(S) / "images"
    names = ["banded/b.jpg", "banded/a.jpg", "zigzag/c.jpg"]
    _image_folder(base, {n: _rgb(rng, 32) for n in names})
    source = build_source("textures_c", Tiny(), tmp_path)
    domain = Domain(C, S, "textures_c")
    assert len(source.labels(domain)) == 3
    order = ["banded/a.jpg", "banded/b.jpg", "zigzag/c.jpg"]
    np.testing.assert_array_equal(
        source.images(domain, np.arange(3)).numpy(), _expected(base, order)
    )


def test_tiny_imagenet_c_resizes_jpegs(tmp_path):
    rng = np.random.default_rng(4)
    base = tmp_path / "Tiny-ImageNet-C" / C / str(S)
    names = ["n02/test_5.JPEG", "n01/test_9.JPEG", "n01/test_10.JPEG"]
    _image_folder(base, {n: _rgb(rng, 64) for n in names})
    (base / "n01" / "._hidden.txt").write_text("")
    source = build_source("tiny_imagenet_c", Tiny(), tmp_path)
    domain = Domain(C, S, "tiny_imagenet_c")
    assert source.labels(domain).tolist() == [-1] * 3
    order = ["n01/test_10.JPEG", "n01/test_9.JPEG", "n02/test_5.JPEG"]
    got = source.images(domain, np.arange(3)).numpy()
    assert got.shape == (3, 3, 32, 32)
    np.testing.assert_array_equal(got, _expected(base, order))
    assert "permutation" in source.provenance()["order"]


def test_root_from_dataset_folder_parent_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv("TTA_DATA_ROOT", raising=False)
    _svhn(tmp_path)
    beside = Tiny(folder=tmp_path / "CIFAR-10-C")  # STAMP: OOD sets beside CIFAR-10-C
    assert build_source("svhn_c", beside).dir == tmp_path / "SVHN-C"
    monkeypatch.setenv("TTA_DATA_ROOT", str(tmp_path))
    assert build_source("svhn_c", Tiny()).dir == tmp_path / "SVHN-C"
    inside = build_source("svhn_c", Tiny(), tmp_path / "SVHN-C")  # a root pointing into the set
    assert inside.dir == tmp_path / "SVHN-C"


def test_missing_root_names_the_layout_and_the_key(tmp_path, monkeypatch):
    monkeypatch.delenv("TTA_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match=r"SVHN-C/\{corruption\}/\{severity\}/test_32x32"):
        build_source("svhn_c", Tiny(), tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="ood_root=/path") as info:
        build_source("textures_c", Tiny())
    assert "Textures-C/{corruption}/{severity}/images/{class}" in str(info.value)
    assert "TTA_DATA_ROOT" in str(info.value)


def test_missing_domain_folder_is_named(tmp_path):
    rng = np.random.default_rng(5)
    base = tmp_path / "LSUN_resize-C"
    _image_folder(base / C / str(S), {"a/0.png": _rgb(rng, 32)})
    two = Tiny(domains=((C, S), ("fog", S)))
    with pytest.raises(FileNotFoundError, match=re.escape(str(base / "fog" / "5"))) as info:
        build_source("lsun_c", two, tmp_path)
    assert "LSUN_resize-C/{corruption}/{severity}/{class}" in str(info.value)
    source = build_source("lsun_c", Tiny(), tmp_path)  # a severity the gradual schedule visits
    with pytest.raises(FileNotFoundError, match=re.escape(str(base / C / "3"))):
        source.labels(Domain(C, 3, "lsun_c"))
    (base / C / "4").mkdir()  # a domain folder without class folders
    with pytest.raises(FileNotFoundError, match="Expected layout"):
        source.labels(Domain(C, 4, "lsun_c"))


def test_bad_mat_and_clean_domains_are_refused(tmp_path):
    folder = tmp_path / "SVHN-C" / C / str(S)
    folder.mkdir(parents=True)
    scipy_io.savemat(folder / "test_32x32.mat", {"X": np.zeros((32, 32, 4), np.uint8)})
    source = build_source("svhn_c", Tiny(), tmp_path)
    with pytest.raises(ValueError, match="'X'"):
        source.labels(Domain(C, S, "svhn_c"))
    with pytest.raises(ValueError, match="clean"):
        build_source("svhn_c", Tiny(domains=(("clean", 0),)), tmp_path)


def test_with_outliers_serves_both_kinds(tmp_path):
    _svhn(tmp_path, n=3)
    data = Tiny()
    both = WithOutliers(data, build_source("svhn_c", data, tmp_path))
    assert both.labels(Domain(C, S, "svhn_c")).tolist() == [-1] * 3
    assert both.images(Domain(C, S, "svhn_c"), np.arange(3)).shape == (3, 3, 32, 32)
    assert "outliers.fingerprint" in both.provenance()
