"""Clean sources (CIFAR pickles, Fashion-MNIST idx, ImageNet val folders), generate mode
(determinism, independence from batching and subsets, cache) and the make-c round trip."""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from ttabench import cli
from ttabench.data.base import CorruptionDataset
from ttabench.data.benchmarks import corruption_benchmark
from ttabench.data.cifar_c import CifarC
from ttabench.data.clean import load_clean, preprocess_imagenet
from ttabench.data.corruptions import corrupt, frost, sample_generators
from ttabench.data.folder_c import FolderC
from ttabench.data.generated import GeneratedCorruptions, jpeg_replay, sample_generator
from ttabench.data.make_c import make_c
from ttabench.domains import Domain

from .c_fixtures import (
    write_cifar_pickle,
    write_fashion_mnist,
    write_frost_textures,
    write_imagenet_val,
)
from .conftest import compose_run

N = 40
WNIDS = ["n01000000", "n02000000"]


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean")
    write_cifar_pickle(root, N)
    write_cifar_pickle(root, N, cifar100=True)
    write_fashion_mnist(root / "fashion-mnist", 30)
    write_imagenet_val(root, WNIDS, files=2)
    return root


def generated(root: Path, cache: Path, **kw) -> GeneratedCorruptions:
    args = {"corruptions": ["gaussian_noise", "contrast"], "cache_dir": cache} | kw
    return corruption_benchmark("cifar10c", source="generate", root=root, **args)


# ---------------------------------------------------------------- clean sources
def test_cifar_pickles_in_torchvision_layout(clean_root):
    clean = load_clean("cifar10", clean_root)
    assert clean.num_classes == 10 and clean.labels.dtype == np.int64 and len(clean.labels) == N
    images = clean.images(np.array([3, 0]))
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8
    hundred = load_clean("cifar100", clean_root / "cifar-100-python", n_per_domain=10)
    assert hundred.num_classes == 100 and hundred.labels.tolist() == [i * 7 for i in range(10)]


def test_clean_source_errors(clean_root, tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"cifar10: .*looked for: .*cifar-10-batches-py/test"
    ):
        load_clean("cifar10", tmp_path)
    (tmp_path / "cifar-10-batches-py").mkdir()
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="is not a cifar10 test pickle"):
        load_clean("cifar10", tmp_path)
    with pytest.raises(ValueError, match="unknown clean source"):
        load_clean("svhn", tmp_path)
    with pytest.raises(ValueError, match="id_list applies to ImageNet only"):
        load_clean("cifar10", clean_root, id_list="ids.txt")


@pytest.mark.parametrize("layout", ["fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_idx_is_padded_to_32_and_replicated(tmp_path, layout):
    write_fashion_mnist(tmp_path / layout, 12, gz=layout == "fashion-mnist")
    clean = load_clean("fashion_mnist", tmp_path)
    images = clean.images(np.arange(12))
    assert images.shape == (12, 3, 32, 32) and clean.labels.tolist() == list(range(10)) + [0, 1]
    assert (images[:, :, :2] == 0).all() and (images[:, :, :, -2:] == 0).all()
    assert (images[:, 0] == images[:, 2]).all() and (images[:, :, 2:30, 2:30] > 0).all()


def test_fashion_mnist_from_debian_package_when_installed(monkeypatch):
    if not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("Debian's dataset-fashion-mnist is not installed")
    monkeypatch.delenv("TTA_DATA_ROOT", raising=False)
    clean = load_clean("fashion_mnist", n_per_domain=100)
    assert len(clean.labels) == 100 and clean.images(np.arange(3)).shape == (3, 3, 32, 32)


def test_imagenet_val_is_resized_and_center_cropped(clean_root):
    clean = load_clean("imagenet", clean_root, n_per_domain=2)
    assert clean.labels.tolist() == [0, 1] and clean.index.tolist() == [0, 2]
    images = clean.images(np.array([1]))
    assert images.shape == (1, 3, 224, 224)
    assert (images[0] == preprocess_imagenet(clean_root / "val" / clean.ids[1])).all()


# ---------------------------------------------------------------- generate mode
def test_generate_is_deterministic_and_independent_of_batching_order_and_subset(
    clean_root, tmp_path
):
    ds = generated(clean_root, tmp_path / "a", severity=[3, 5])
    assert isinstance(ds, CorruptionDataset) and ds.num_classes == 10
    domain = Domain("gaussian_noise", 5)
    whole = ds.images(domain, np.arange(N))
    assert whole.dtype == torch.uint8 and whole.shape == (N, 3, 32, 32)
    order = np.random.default_rng(0).permutation(N)
    other = generated(clean_root, tmp_path / "b", severity=[3, 5])  # fresh cache
    for size in (1, 7, 64):  # batches in shuffled order, in a fresh cache: same images
        parts = [other.images(domain, order[i : i + size]) for i in range(0, N, size)]
        assert torch.equal(torch.cat(parts), whole[order])
    small = generated(clean_root, tmp_path / "c", n_per_domain=9)  # a prefix: same images
    assert torch.equal(small.images(domain, np.arange(9)), whole[:9])
    chunked = GeneratedCorruptions(ds.clean, ["gaussian_noise"], 5, cache_dir=tmp_path, chunk=4)
    assert torch.equal(chunked.images(domain, np.arange(N)), whole)
    clean = torch.from_numpy(ds.clean.images(np.array([7])))
    by_hand = corrupt(clean, "gaussian_noise", 5, sample_generator(0, "gaussian_noise", 5, 7))
    assert torch.equal(by_hand[0], whole[7])
    assert not torch.equal(ds.images(Domain("gaussian_noise", 3), np.arange(N)), whole)
    reseeded = generated(clean_root, tmp_path / "a", seed=1)
    assert not torch.equal(reseeded.images(domain, np.arange(N)), whole)
    assert (ds.labels(domain) == ds.clean.labels).all() and ds.labels(domain).dtype == np.int64


def test_generate_uses_the_cache_and_records_provenance(clean_root, tmp_path, monkeypatch):
    first = generated(clean_root, tmp_path).images(Domain("contrast", 2), np.arange(5))
    monkeypatch.setattr("ttabench.data.generated.corrupt", lambda *a, **k: 1 / 0)
    again = generated(clean_root, tmp_path)
    assert torch.equal(again.images(Domain("contrast", 2), np.arange(5)), first)
    record = again.provenance()
    assert record["source"] == "generated" and record["clean"] == "cifar10"
    assert record["profile"] == "cifar" and record["seed"] == "0"
    assert record["jpeg_replay"] == "none" and "per sample" in record["seeding"]


def test_generate_rejects_corruptions_it_cannot_make(clean_root, tmp_path, monkeypatch):
    monkeypatch.setenv(frost.ENV_VAR, str(tmp_path))  # a folder without the frost textures
    with pytest.raises(ValueError, match=r"frost cannot be generated .*dataset.corruptions=\[con"):
        generated(clean_root, tmp_path, corruptions=["frost", "contrast"])
    with pytest.raises(ValueError, match="Tiny-ImageNet-C's|tinyimagenetc cannot be generated"):
        corruption_benchmark("tinyimagenetc", source="generate", root=clean_root)
    ds = generated(clean_root, tmp_path)
    monkeypatch.setitem(sys.modules, "cv2", None)  # no OpenCV
    with pytest.raises(ValueError, match="spatter cannot be generated .*opencv-python-headless"):
        ds.labels(Domain("spatter", 5))


def test_generate_frost_and_spatter_per_sample_with_their_provenance(
    clean_root, tmp_path, monkeypatch
):
    monkeypatch.setenv(frost.ENV_VAR, str(write_frost_textures(tmp_path / "tex")))
    pytest.importorskip("cv2")
    names = ["frost", "spatter", "glass_blur"]
    ds = generated(clean_root, tmp_path / "a", corruptions=names, severity=[3])
    record = ds.provenance()
    assert str(tmp_path / "tex") in record["frost_textures"]
    assert "frost_textures_sha256" in record and "OpenCV" in record["spatter_backend"]
    small = GeneratedCorruptions(ds.clean, names, 3, cache_dir=tmp_path / "b", chunk=3)
    clean = torch.from_numpy(ds.clean.images(np.array([5])))
    for name in names:
        domain = Domain(name, 3)
        whole = ds.images(domain, np.arange(N))
        assert torch.equal(small.images(domain, np.arange(N)[::-1]), whole.flip(0))
        alone = corrupt(clean, name, 3, sample_generators(0, name, 3, [5]))
        assert torch.equal(alone[0], whole[5])
    before = ds.images(Domain("frost", 3), np.arange(4))
    monkeypatch.setenv(frost.ENV_VAR, str(write_frost_textures(tmp_path / "tex2", seed=9)))
    again = generated(clean_root, tmp_path / "a", corruptions=["frost"], severity=[3])
    assert not torch.equal(again.images(Domain("frost", 3), np.arange(4)), before)  # not stale
    with pytest.raises(ValueError, match="severity must be in 1..5"):
        ds.images(Domain("contrast", 0), np.array([0]))


def test_fashionmnistc_preset_generates_from_the_clean_files(clean_root):
    cfg = compose_run("dataset=fashionmnistc", f"dataset.root={clean_root}", tiny=False)
    from ttabench.data.corruptions import COMMON_CORRUPTIONS

    assert cfg.dataset.source == "generate"
    assert list(cfg.dataset.corruptions) == list(COMMON_CORRUPTIONS)  # canonical order
    cfg = compose_run(
        "dataset=fashionmnistc", f"dataset.root={clean_root}", "dataset.n_per_domain=8"
    )
    ds = instantiate(cfg.dataset)
    assert ds.images(ds.domains[1], np.arange(8)).shape == (8, 3, 32, 32)
    assert ds.provenance()["clean"] == "fashion_mnist"


# ---------------------------------------------------------------- make-c
def test_make_c_npy_round_trip(clean_root, tmp_path):
    folder = make_c(
        "cifar10c", clean_root, tmp_path / "out", ["gaussian_noise", "contrast"], log=lambda s: 0
    )
    assert folder == tmp_path / "out" / "CIFAR-10-C"
    labels = np.load(folder / "labels.npy")
    assert labels.dtype == np.uint8 and labels.shape == (5 * N,)
    with pytest.warns(UserWarning, match=f"{N} images per severity"):
        files = CifarC(tmp_path / "out", corruptions=["gaussian_noise", "contrast"])
    ds = generated(clean_root, tmp_path / "cache")
    for domain in [Domain(c, s) for c in ("gaussian_noise", "contrast") for s in range(1, 6)]:
        assert torch.equal(files.images(domain, np.arange(N)), ds.images(domain, np.arange(N)))
        assert (files.labels(domain) == ds.labels(domain)).all()
    record = files.provenance()
    assert record["made_by"] == "ttabench make-c" and record["profile"] == "cifar"
    assert record["make_c_clean"] == "cifar10" and record["seed"] == "0"


def test_make_c_jpeg_round_trip_replays_the_q85_save(clean_root, tmp_path):
    out = tmp_path / "out"
    make_c("imagenetc", clean_root, out, ["contrast"], [2, 5], log=lambda s: 0)
    files = sorted(p.relative_to(out) for p in out.rglob("*.JPEG"))
    assert len(files) == 2 * 4 and files[0].parts[:4] == ("ImageNet-C", "contrast", "2", WNIDS[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2 wnid folders, not 1000
        folder = FolderC(out, corruptions=["contrast"], severity=[2, 5], n_per_domain=None)
    gen = corruption_benchmark(
        "imagenetc", "generate", clean_root, ["contrast"], 5, None, cache_dir=tmp_path / "cache"
    )
    assert gen.provenance()["jpeg_replay"] == "85"
    for severity in (2, 5):
        domain = Domain("contrast", severity)
        read, made = folder.images(domain, np.arange(4)), gen.images(domain, np.arange(4))
        assert made.shape == (4, 3, 224, 224) and torch.equal(read, made)
        assert (folder.labels(domain) == gen.labels(domain)).all()
    assert not torch.equal(jpeg_replay(made[:1]), made[:1])  # a second save changes pixels


def test_make_c_cli_writes_and_reports_errors_without_traceback(
    clean_root, tmp_path, capsys, monkeypatch
):
    assert cli.main(["--help"]) == 0 and "  make-c " in capsys.readouterr().out
    out = str(tmp_path / "out")
    argv = ["make-c", "cifar100c", "--root", str(clean_root), "--out", out]
    argv += ["--corruptions", "contrast", "--n-per-domain"]
    assert cli.main([*argv, "16"]) == 0
    assert "written:" in capsys.readouterr().out
    record = json.loads((tmp_path / "out/CIFAR-100-C/ttabench-make-c.json").read_text())
    assert record["clean"] == "cifar100" and record["n_per_domain"] == 16
    assert cli.main([*argv, "16"]) == 0  # same parameters: existing files are kept
    assert "keep " in capsys.readouterr().err
    assert cli.main([*argv, "8"]) == 2  # other parameters than the existing files
    assert "(n_per_domain differ); pass --overwrite" in capsys.readouterr().err
    (tmp_path / "published" / "CIFAR-100-C").mkdir(parents=True)
    (tmp_path / "published" / "CIFAR-100-C" / "labels.npy").write_bytes(b"")
    assert cli.main([*argv[:5], str(tmp_path / "published"), *argv[6:], "16"]) == 2
    assert "holds files not written by ttabench make-c" in capsys.readouterr().err
    assert cli.main(["make-c", "cifar10c", "--root", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ttabench make-c: error: cifar10: data root") and "Traceback" not in err
    monkeypatch.setenv(frost.ENV_VAR, str(tmp_path / "published"))  # no frost textures there
    assert cli.main(["make-c", "cifar10c", "--root", out, "--corruptions", "frost"]) == 2
    assert "frost cannot be generated" in capsys.readouterr().err
    monkeypatch.setenv(frost.ENV_VAR, str(write_frost_textures(tmp_path / "frost")))
    assert cli.main(["make-c", "cifar10c", "--root", str(clean_root), "--severities", "5"]) == 2
    assert "hold all 5 severities" in capsys.readouterr().err


@pytest.mark.slow
def test_make_c_full_size_cifar10c_is_read_without_warnings(tmp_path):
    write_cifar_pickle(tmp_path, 10_000)
    make_c("cifar10c", tmp_path, tmp_path, ["contrast"], log=lambda s: 0)
    assert np.load(tmp_path / "CIFAR-10-C/contrast.npy", mmap_mode="r").shape == (50_000, 32, 32, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the published shape: no "subset" warning
        files = corruption_benchmark("cifar10c", root=tmp_path, corruptions=["contrast"])
    gen = generated(tmp_path, tmp_path / "cache", corruptions=["contrast"])
    rows = np.array([0, 4321, 9999])
    for severity in (1, 5):
        domain = Domain("contrast", severity)
        assert torch.equal(files.images(domain, rows), gen.images(domain, rows))
