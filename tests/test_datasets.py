"""The CIFAR-10-C / CIFAR-100-C and ImageNet-C / Tiny-ImageNet-C readers on fixture files written
in the published formats (tests/c_fixtures.py), their error paths, the presets, and a run."""

from __future__ import annotations

import mmap
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from ttabench.data.base import CorruptionDataset
from ttabench.data.benchmarks import corruption_benchmark
from ttabench.data.cifar_c import CifarC
from ttabench.data.corruptions import COMMON_CORRUPTIONS, corrupt, frost, sample_generators
from ttabench.data.embedded import EmbeddedCorruptions
from ttabench.data.folder_c import FolderC
from ttabench.domains import Domain
from ttabench.loader import fetch_images
from ttabench.run import run
from ttabench.streams import Stream

from .c_fixtures import (
    BLOCK,
    MARKED,
    cifar_labels,
    colour,
    mark,
    write_cifar_c,
    write_folder_c,
    write_frost_textures,
    write_jpeg,
)
from .conftest import compose_run

CORRUPTIONS = ["gaussian_noise", "contrast", "frost"]
WNIDS = ["n02000000", "n01000000", "n03000000"]  # created unsorted: class index = sorted order


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_cifar_c(root / "CIFAR-10-C", CORRUPTIONS, filled=128)
    return root


@pytest.fixture(scope="module")
def imagenet_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("inet")
    write_folder_c(root / "ImageNet-C", ["gaussian_noise", "contrast"], WNIDS, files=3)
    return root


def cifar(root, **kw) -> CifarC:
    return CifarC(root, **({"corruptions": ["gaussian_noise", "contrast"]} | kw))


def imagenet(root, **kw) -> FolderC:
    args = {"corruptions": ["gaussian_noise", "contrast"], "n_per_domain": None} | kw
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*has 3 wnid folders")  # the fixture's 3 classes
        return FolderC(root, **args)


# ---------------------------------------------------------------- CIFAR-10-C / CIFAR-100-C
def test_cifar_c_shapes_dtypes_labels_and_severity_slicing(cifar_root):
    ds = cifar(cifar_root, severity=[1, 5])
    assert isinstance(ds, CorruptionDataset) and ds.num_classes == 10
    assert ds.domains == [Domain(c, s) for c in ("gaussian_noise", "contrast") for s in (1, 5)]
    labels = ds.labels(Domain("contrast", 5))
    assert labels.dtype == np.int64 and labels.shape == (BLOCK,)
    assert (labels == cifar_labels()).all()  # uint8 on disk -> int64
    for corruption in ("gaussian_noise", "contrast"):
        for severity in range(1, 6):  # every severity, also unconfigured ones (gradual)
            images = ds.images(Domain(corruption, severity), np.array(MARKED[::-1]))
            assert images.dtype == torch.uint8 and images.shape == (len(MARKED), 3, 32, 32)
            expected = np.stack([mark(corruption, severity, i) for i in MARKED[::-1]])
            assert (images.numpy().transpose(0, 2, 3, 1) == expected).all()


def test_cifar_c_is_memory_mapped_and_releases_pages_without_changing_images(cifar_root):
    ds = cifar(cifar_root)
    assert isinstance(ds._maps["contrast"][0], mmap.mmap)  # mapped at build (header checks)
    assert ds.images(Domain("contrast", 3), np.array([], dtype=np.int64)).shape == (0, 3, 32, 32)
    ds.release_rows = 2  # release the mapped pages after every other row
    for _ in range(3):
        for i in MARKED:
            image = ds.images(Domain("contrast", 4), np.array([i]))[0].numpy()
            assert (image.transpose(1, 2, 0) == mark("contrast", 4, i)).all()


def test_gradual_stream_reads_every_severity(cifar_root):
    ds = cifar(cifar_root, n_per_domain=64, corruptions=["contrast"])
    plan = Stream(domains="gradual", batch_size=64).build(ds.domains, ds.labels)
    assert sorted({d.severity for d in plan.domains}) == [1, 2, 3, 4, 5]
    for batch in plan.batches():
        assert fetch_images(ds, plan, batch.domain_ids, batch.indices).shape == (64, 3, 32, 32)


def test_cifar_c_root_can_point_into_the_folder_or_come_from_the_environment(
    cifar_root, monkeypatch
):
    inside = cifar(cifar_root / "CIFAR-10-C")
    assert inside.dir == cifar(cifar_root).dir
    monkeypatch.setenv("TTA_DATA_ROOT", str(cifar_root))
    assert cifar(None).dir == inside.dir
    assert corruption_benchmark("cifar10c", corruptions=["contrast"]).dir == inside.dir


def test_cifar_c_n_per_domain_keeps_the_first_images(cifar_root):
    ds = cifar(cifar_root, n_per_domain=128)
    assert (ds.labels(Domain("contrast", 5)) == cifar_labels()[:128]).all()
    assert ds.images(Domain("contrast", 2), np.array([127])).shape == (1, 3, 32, 32)
    with pytest.raises(IndexError, match=r"0\.\.127 \(the domain has 128 samples\)"):
        ds.images(Domain("contrast", 5), np.array([128]))
    with pytest.raises(ValueError, match="exceeds the 10000"):
        cifar(cifar_root, n_per_domain=10001)


def test_cifar100_c_labels_up_to_99(tmp_path):
    write_cifar_c(tmp_path / "CIFAR-100-C", ["fog"], num_classes=100)
    ds = corruption_benchmark("cifar100c", root=tmp_path, corruptions=["fog"])
    assert ds.num_classes == 100 and ds.labels(Domain("fog", 5)).max() == 99


def test_cifar_c_provenance_records_files_and_a_content_fingerprint(cifar_root, tmp_path):
    record = cifar(cifar_root).provenance()
    assert record["source"] == "files" and record["benchmark"] == "CIFAR-10-C"
    assert record["files"] == "labels.npy,gaussian_noise.npy,contrast.npy"
    assert record["fingerprint"] == cifar(cifar_root).provenance()["fingerprint"]
    other = write_cifar_c(tmp_path / "CIFAR-10-C", ["gaussian_noise", "contrast"], filled=1)
    assert cifar(other).provenance()["fingerprint"] != record["fingerprint"]


def test_cifar_c_missing_root_names_the_layout(monkeypatch, tmp_path):
    monkeypatch.delenv("TTA_DATA_ROOT", raising=False)
    with pytest.raises(FileNotFoundError, match="no data root given.*TTA_DATA_ROOT") as info:
        cifar(None)
    assert "<root>/CIFAR-10-C/{corruption}.npy" in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist; looked for: .*labels.npy"):
        cifar(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="not found under data root"):
        cifar(tmp_path)


def test_cifar_c_missing_corruption_file_lists_the_files_looked_for(cifar_root):
    with pytest.raises(FileNotFoundError, match="lacks fog.npy; looked for:") as info:
        cifar(cifar_root, corruptions=["contrast", "fog"])
    assert f"{cifar_root / 'CIFAR-10-C' / 'fog.npy'}" in str(info.value)
    assert "present: contrast.npy, frost.npy" in str(info.value)


def test_cifar_c_malformed_files_are_value_errors(tmp_path):
    folder = write_cifar_c(tmp_path / "CIFAR-10-C", ["contrast"])
    np.save(folder / "fog.npy", np.zeros((50000, 32, 32), np.uint8))
    with pytest.raises(ValueError, match=r"fog.npy has shape \(50000, 32, 32\)"):
        cifar(tmp_path, corruptions=["fog"])
    np.lib.format.open_memmap(folder / "fog.npy", "w+", np.float32, (50000, 32, 32, 3))
    with pytest.raises(ValueError, match="dtype float32"):
        cifar(tmp_path, corruptions=["fog"])
    (folder / "fog.npy").write_bytes(b"not a npy file")
    with pytest.raises(ValueError, match="not a readable .npy"):
        cifar(tmp_path, corruptions=["fog"])


def test_cifar_c_labels_length_mismatch_and_bad_blocks(tmp_path):
    folder = write_cifar_c(tmp_path / "CIFAR-10-C", ["contrast"])
    np.save(folder / "labels.npy", np.zeros(40000, np.uint8))  # 5 x 8000: contrast has 50000
    with pytest.warns(UserWarning, match="8000 images per severity"):
        with pytest.raises(ValueError, match=r"expected \(40000, 32, 32, 3\)"):
            cifar(tmp_path, corruptions=["contrast"])
    np.save(folder / "labels.npy", np.zeros(49999, np.uint8))
    with pytest.raises(ValueError, match="49999 labels; expected 50000"):
        cifar(tmp_path, corruptions=["contrast"])
    labels = np.tile(cifar_labels(), 5)
    labels[BLOCK + 5] += 1  # severity 2 block differs
    np.save(folder / "labels.npy", labels)
    with pytest.raises(ValueError, match="severity blocks .* differ"):
        cifar(tmp_path, corruptions=["contrast"])


def test_severity_and_corruption_errors(cifar_root):
    with pytest.raises(ValueError, match="severity must be in 1..5"):
        cifar(cifar_root, severity=6)
    with pytest.raises(ValueError, match="unknown corruption.*'gausian_noise'.*valid|takes names"):
        cifar(cifar_root, corruptions=["gausian_noise"])
    ds = cifar(cifar_root)
    with pytest.raises(ValueError, match="severity must be in 1..5, got 0"):
        ds.labels(Domain("contrast", 0))
    with pytest.raises(ValueError, match="severity must be in 1..5, got 6"):
        ds.images(Domain("contrast", 6), np.array([0]))
    with pytest.raises(ValueError, match="unknown corruption 'blur'"):
        ds.labels(Domain("blur", 5))
    with pytest.raises(ValueError, match="unknown benchmark"):
        corruption_benchmark("cifar10-c")
    with pytest.raises(ValueError, match="dataset.source must be one of"):
        corruption_benchmark("cifar10c", source="download", root=cifar_root)


# ---------------------------------------------------------------- ImageNet-C / Tiny-ImageNet-C
def test_imagenet_c_class_index_from_sorted_wnids(imagenet_root):
    ds = imagenet(imagenet_root)
    assert ds.wnids == sorted(WNIDS) and ds.num_classes == 3
    assert ds.ids[0] == "n01000000/ILSVRC2012_val_00001000.JPEG"
    labels = ds.labels(Domain("contrast", 5))
    assert labels.dtype == np.int64 and labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    images = ds.images(Domain("contrast", 5), np.array([4, 0]))
    assert images.dtype == torch.uint8 and images.shape == (2, 3, 224, 224)
    means = images.float().mean(dim=(2, 3))
    expected = torch.tensor([colour(1, 1, 5), colour(0, 0, 5)], dtype=torch.float32)
    assert (means - expected).abs().max() < 3  # flat colours survive JPEG q85
    severity1 = ds.images(Domain("gaussian_noise", 1), np.array([0])).float().mean(dim=(2, 3))
    assert (severity1 - torch.tensor([colour(0, 0, 1)])).abs().max() < 3


def test_imagenet_c_labels_need_no_decoding(imagenet_root, monkeypatch):
    ds = imagenet(imagenet_root)
    monkeypatch.setattr("ttabench.data.folder_c.Image.open", lambda *a: 1 / 0)
    assert len(ds.labels(Domain("gaussian_noise", 5))) == 9
    assert len(ds.labels(Domain("gaussian_noise", 1))) == 9
    assert ds.provenance()["source"] == "files"


def test_imagenet_c_default_subset_is_class_balanced(imagenet_root):
    ds = imagenet(imagenet_root, n_per_domain=6)  # 2 of each of the 3 classes
    assert ds.labels(Domain("contrast", 5)).tolist() == [0, 0, 1, 1, 2, 2]
    assert [i.split("_")[-1] for i in ds.ids[:2]] == ["00001000.JPEG", "00001001.JPEG"]
    assert ds.provenance()["n_per_domain"] == "6"


def test_imagenet_c_id_list_subsets_in_list_order(imagenet_root, tmp_path):
    ids = tmp_path / "ids.txt"
    ids.write_text(
        "# RobustBench format\nn03000000/ILSVRC2012_val_00003001.JPEG\n\n"
        "n01000000/ILSVRC2012_val_00001002.JPEG\nn02000000/ILSVRC2012_val_00002000.JPEG\n"
    )
    ds = imagenet(imagenet_root, id_list=ids, n_per_domain=None)
    assert ds.labels(Domain("contrast", 5)).tolist() == [2, 0, 1]
    means = ds.images(Domain("contrast", 5), np.array([0])).float().mean(dim=(2, 3))
    assert (means - torch.tensor([colour(2, 1, 5)])).abs().max() < 3
    assert imagenet(imagenet_root, id_list=ids, n_per_domain=2).ids == ds.ids[:2]
    assert ds.provenance()["id_list"] == str(ids)
    with pytest.raises(ValueError, match="5000 exceeds the 3 samples .* of id list .*=null"):
        imagenet(imagenet_root, id_list=ids, n_per_domain=5000)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("n01000000_ILSVRC2012_val_00000002.JPEG\n", r"ids.txt:1: .* is not 'wnid/"),
        ("n01000000/a.JPEG\nn09999999/b.JPEG\n", r"ids.txt:2: wnid 'n09999999' has no class"),
        ("n01000000/a.JPEG\nn01000000/a.JPEG\n", "repeats an id"),
    ],
)
def test_imagenet_c_malformed_id_list(imagenet_root, tmp_path, text, match):
    (tmp_path / "ids.txt").write_text(text)
    with pytest.raises(ValueError, match=match):
        imagenet(imagenet_root, id_list=tmp_path / "ids.txt")


def test_imagenet_c_error_paths(imagenet_root, tmp_path):
    with pytest.raises(FileNotFoundError, match="id list .* not found"):
        imagenet(imagenet_root, id_list=tmp_path / "missing.txt")
    with pytest.raises(FileNotFoundError, match=r"lacks the domain folder\(s\) .*fog/5"):
        imagenet(imagenet_root, corruptions=["contrast", "fog"])
    with pytest.raises(FileNotFoundError, match="ImageNet-C: not found under data root"):
        imagenet(tmp_path)
    with pytest.raises(ValueError, match="exceeds the 9 samples"):
        imagenet(imagenet_root, n_per_domain=10)
    ds = imagenet(imagenet_root)
    with pytest.raises(FileNotFoundError, match="domain folder .*contrast/3 is missing"):
        ds.labels(Domain("contrast", 3))
    with pytest.raises(ValueError, match="severity must be in 1..5"):
        ds.labels(Domain("contrast", 7))
    with pytest.raises(IndexError, match=r"0\.\.8 \(the domain has 9 samples\)"):
        ds.images(Domain("contrast", 5), np.array([0, 9]))
    with pytest.raises(ValueError, match="id_list applies to ImageNet-C"):
        corruption_benchmark("cifar10c", id_list="x.txt")


def test_imagenet_c_missing_wnid_and_missing_image(tmp_path):
    root = write_folder_c(tmp_path / "ImageNet-C", ["contrast"], WNIDS, files=2, severities=[5])
    write_folder_c(root, ["fog"], WNIDS[:2], files=2, severities=[5])
    with pytest.raises(FileNotFoundError, match="fog/5 lacks 1 of the 3 wnid folders"):
        imagenet(tmp_path, corruptions=["contrast", "fog"])
    (root / "contrast/5/n01000000/ILSVRC2012_val_00001001.JPEG").unlink()
    write_jpeg(root / "fog/5/n03000000/ILSVRC2012_val_00003000.JPEG", (1, 2, 3), (224, 224))
    ds = imagenet(tmp_path, corruptions=["fog", "contrast"])  # fog's listing defines the samples
    assert len(ds.ids) == 5 and ds.ids[1] == "n01000000/ILSVRC2012_val_00001001.JPEG"
    with pytest.raises(FileNotFoundError, match="image .*contrast/5/n01000000/.*1001.JPEG is miss"):
        ds.images(Domain("contrast", 5), np.array([0, 1]))


def test_tiny_imagenet_c_frost_bug_drops_extra_wnids_with_a_warning(tmp_path):
    root = tmp_path / "Tiny-ImageNet-C"
    write_folder_c(root, ["contrast"], WNIDS, files=2, severities=[5], size=64)
    extra = ["n00000001", "n09999999"]  # frost ships 1000 wnid folders instead of 200
    write_folder_c(root, ["frost"], WNIDS + extra, files=2, severities=[5], size=64)
    with pytest.warns(UserWarning, match="dropping the 2 not in .*hendrycks/robustness#60"):
        with pytest.warns(UserWarning, match="3 wnid folders, not 200"):
            ds = corruption_benchmark(
                "tinyimagenetc", root=tmp_path, corruptions=["frost", "contrast"]
            )
    assert ds.reference.parent.name == "contrast" and ds.wnids == sorted(WNIDS)
    assert ds.labels(Domain("frost", 5)).tolist() == [0, 0, 1, 1, 2, 2]
    assert ds.images(Domain("frost", 5), np.arange(6)).shape == (6, 3, 64, 64)
    with pytest.warns(UserWarning) as record:  # frost alone: contrast still gives the wnids
        alone = corruption_benchmark("tinyimagenetc", root=tmp_path, corruptions=["frost"])
    assert any("dropping the 2" in str(w.message) for w in record)
    assert alone.num_classes == 3


# ---------------------------------------------------------------- presets and runs
@pytest.mark.parametrize("preset", ["cifar10c", "cifar100c", "imagenetc", "tinyimagenetc"])
def test_presets_default_to_the_canonical_15_and_a_data_root(preset):
    cfg = compose_run(f"dataset={preset}", tiny=False).dataset
    assert cfg.source == "files" and cfg.root is None and cfg.severity == 5
    assert list(cfg.corruptions)[8] == "frost" and len(cfg.corruptions) == 15
    assert cfg.n_per_domain == (5000 if preset == "imagenetc" else None)


def test_embedded_default_is_the_common_15_seeded_per_sample(tmp_path, monkeypatch):
    assert list(compose_run("dataset=embedded", tiny=False).dataset.corruptions) == list(
        COMMON_CORRUPTIONS
    )
    ds = EmbeddedCorruptions(["clean", "gaussian_noise"], severity=2)  # session cache
    rows = np.array([9999, 3, 4321])
    clean = ds.images(Domain("clean", 0), rows)
    noisy = ds.images(Domain("gaussian_noise", 2), rows)
    for k, i in enumerate(rows):  # image i depends on (seed, corruption, severity, i) only
        gen = sample_generators(0, "gaussian_noise", 2, [i])
        assert torch.equal(corrupt(clean[k : k + 1], "gaussian_noise", 2, gen)[0], noisy[k])
    record = ds.provenance()
    assert record["source"] == "embedded" and record["corruption_profile"] == "cifar"
    assert "per sample" in record["seeding"] and record["seed"] == "0"
    assert len(record["corruption_code"]) == 16 and "frost_textures" not in record
    monkeypatch.setenv(frost.ENV_VAR, str(write_frost_textures(tmp_path / "tex")))
    with_frost = EmbeddedCorruptions(["contrast", "frost"], cache_dir=tmp_path).provenance()
    assert str(tmp_path / "tex") in with_frost["frost_textures"]


def test_embedded_frost_without_textures_fails_at_construction(tmp_path, monkeypatch):
    monkeypatch.setenv(frost.ENV_VAR, str(tmp_path))  # no textures there
    with pytest.raises(ValueError, match=r"lacks frost1.png.*dataset.corruptions=\[contrast\]"):
        EmbeddedCorruptions(["contrast", "frost"], cache_dir=tmp_path)
    with pytest.raises(InstantiationException, match="pip install .imagecorruptions>=1.1.2."):
        instantiate(compose_run("dataset=embedded", tiny=False).dataset)


def test_presets_instantiate_on_fixture_files(cifar_root, imagenet_root):
    ds = instantiate(compose_run("dataset=cifar10c", f"dataset.root={cifar_root}").dataset)
    assert len(ds.labels(ds.domains[0])) == 256 and ds.name == "cifar10c"
    cfg = compose_run(
        "dataset=imagenetc", f"dataset.root={imagenet_root}", "dataset.n_per_domain=3"
    )
    with pytest.warns(UserWarning, match="3 wnid folders, not 1000"):
        ds = instantiate(cfg.dataset)
    assert ds.labels(ds.domains[1]).tolist() == [0, 1, 2]


def test_run_on_cifar10c_fixture_files(cifar_root, tmp_path):
    cfg = compose_run(
        "dataset=cifar10c",
        f"dataset.root={cifar_root}",
        "dataset.corruptions=[gaussian_noise,contrast]",
        "dataset.n_per_domain=128",
        "stream=continual",
        "method=bn",
    )
    summary = run(cfg, tmp_path)
    assert (summary.status == "complete").all()
    assert (
        summary.set_index("domain").loc[["gaussian_noise", "contrast"], "n"].tolist() == [128] * 2
    )
    assert "source=files;benchmark=CIFAR-10-C" in summary.provenance.iloc[0]
    assert summary.dataset.iloc[0] == "cifar10c"


def test_cli_missing_root_is_one_paragraph_exit_2(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "ttabench.cli", "run", "dataset=cifar10c"]
        + [f"dataset.root={tmp_path}/nope", f"hydra.run.dir={tmp_path}/run", "progress=false"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "CIFAR-10-C: data root" in out.stderr
    assert "Download it (opt-in): ttabench download cifar10c --root DIR" in out.stderr


def test_decoding_threads_are_not_part_of_a_runs_configuration(tmp_path):
    """dataset.workers changes how fast JPEGs are decoded, never which images: a rerun with
    another thread count finds the complete run instead of refusing it as another config."""
    root = tmp_path / "data"  # 10 classes, as the embedded model has outputs
    write_folder_c(root / "ImageNet-C", ["contrast"], [f"n{i:08d}" for i in range(10)], files=1)
    tmp_path = tmp_path / "run"
    base = ["dataset=imagenetc", f"dataset.root={root}", "dataset.n_per_domain=3",
            "dataset.corruptions=[contrast]", "stream.batch_size=2", "method=bn"]  # fmt: skip
    with pytest.warns(UserWarning, match="wnid folders"):
        first = run(compose_run(*base, "dataset.workers=1"), tmp_path)
    assert "workers" not in first["dataset_params"].iloc[-1]
    before = (tmp_path / "online.csv").stat().st_mtime_ns
    again = run(compose_run(*base, "dataset.workers=3"), tmp_path)  # no error: same config
    assert again["status"].iloc[-1] == "complete"
    assert (tmp_path / "online.csv").stat().st_mtime_ns == before  # skipped, not rerun
    with pytest.raises(InstantiationException, match="workers must be an integer >= 0"):
        instantiate(compose_run(*base, "dataset.workers=-1").dataset)
