"""The class split (``dataset=embedded_8_2``, STAMP's cifar10c_8_2): the kept classes as the
dataset, the held-out ones as the outlier source ``split``, and the 8-class source model."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from hydra.utils import instantiate

from ttabench.data.embedded import EmbeddedCorruptions
from ttabench.data.outliers import OutlierSource, WithOutliers, build_source
from ttabench.domains import Domain
from ttabench.models.embedded import WEIGHTS, load_embedded
from ttabench.pretrain import keep_classes
from ttabench.pretrain import main as pretrain
from ttabench.run import check_combination, run

from .conftest import compose_run

C = "contrast"  # cheap to generate (and the TINY runs of conftest use it too)
DOMAIN = Domain(C, 5)


@pytest.fixture(scope="module")
def full() -> EmbeddedCorruptions:
    return EmbeddedCorruptions([C], 5)


@pytest.fixture(scope="module")
def split() -> EmbeddedCorruptions:
    return EmbeddedCorruptions([C], 5, classes=8)


def test_the_split_keeps_every_sample_of_the_kept_classes_once_in_order(full, split):
    labels = full.labels(DOMAIN)
    kept = split.kept_rows()
    assert np.array_equal(kept, np.flatnonzero(labels < 8))  # each once, in dataset order
    assert np.array_equal(split.labels(DOMAIN), labels[labels < 8])
    assert set(split.labels(DOMAIN)) == set(range(8)) and split.num_classes == 8
    assert len(split.class_names) == 8 and full.num_classes == 10
    positions = np.array([0, 1, 7, 500, len(kept) - 1, 3])
    assert torch.equal(split.images(DOMAIN, positions), full.images(DOMAIN, kept[positions]))
    with pytest.raises(IndexError):
        split.images(DOMAIN, np.array([len(kept)]))


def test_n_per_domain_keeps_the_first_n_kept_samples(full, split):
    small = EmbeddedCorruptions([C], 5, n_per_domain=100, classes=8)
    assert np.array_equal(small.labels(DOMAIN), split.labels(DOMAIN)[:100])
    assert torch.equal(small.images(DOMAIN, np.arange(100)), split.images(DOMAIN, np.arange(100)))
    assert np.array_equal(small.held_out_rows(), split.held_out_rows())  # outliers: all of them
    with pytest.raises(IndexError):
        small.images(DOMAIN, np.array([100]))


def test_without_a_split_nothing_changes(full):
    labels = full.labels(DOMAIN)
    assert full.classes is None and len(full.held_out_rows()) == 0
    assert np.array_equal(full.kept_rows(), np.arange(len(labels)))
    assert "classes" not in full.provenance()
    assert torch.equal(full.rows(DOMAIN, np.array([4, 2])), full.images(DOMAIN, np.array([4, 2])))


@pytest.mark.parametrize("classes", [0, 1, 11])
def test_classes_out_of_range_is_an_error(classes):
    with pytest.raises(ValueError, match="classes must be in 2..10"):
        EmbeddedCorruptions([C], 5, classes=classes)


def test_split_source_serves_the_held_out_samples_as_outliers_in_dataset_order(full, split):
    source = build_source("split", split)
    assert isinstance(source, OutlierSource) and source.name == "split"
    labels = full.labels(DOMAIN)
    held = np.flatnonzero(labels >= 8)
    tagged = Domain(C, 5, "split")
    assert np.array_equal(source.labels(tagged), np.full(len(held), -1))
    assert len(held) + len(split.labels(DOMAIN)) == len(labels)
    indices = np.array([0, 1, 2, len(held) - 1, 10])
    expected = full.images(DOMAIN, held[indices])  # same corruption and severity
    assert torch.equal(source.images(tagged, indices), expected)
    with pytest.raises(IndexError):
        source.images(tagged, np.array([len(held)]))
    both = WithOutliers(split, source)
    assert both.num_classes == 8 and torch.equal(both.images(tagged, indices), expected)
    assert np.array_equal(both.labels(DOMAIN), split.labels(DOMAIN))
    assert both.provenance()["outliers.held_out_classes"] == "8-9"
    assert both.provenance()["classes"] == "0-7"


def test_split_source_needs_a_class_split_dataset(full):
    with pytest.raises(ValueError, match="dataset=embedded_8_2"):
        build_source("split", full)


def test_the_preset_composes_and_pairs_with_the_8_class_model():
    cfg = compose_run("dataset=embedded_8_2", "model=embedded_8", f"dataset.corruptions=[{C}]")
    assert cfg.dataset.classes == 8 and cfg.dataset.name == "embedded_8_2"
    assert cfg.dataset.corruptions == [C] and cfg.dataset.n_per_domain == 256
    dataset = instantiate(cfg.dataset)
    assert dataset.num_classes == 8 and dataset.labels(DOMAIN).max() == 7
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_combination(cfg)
    assert compose_run("dataset=embedded_8_2").model.weights == "embedded_resnet8_c8"  # default
    with pytest.warns(UserWarning, match="use model=embedded_8"):
        check_combination(compose_run("dataset=embedded_8_2", "model=embedded"))


def test_the_8_class_model_loads_and_outputs_8_logits(split):
    record = json.loads((WEIGHTS / "embedded_resnet8_c8.json").read_text())
    assert record["num_classes"] == 8 and record["config"]["classes"] == 8
    model = load_embedded(weights="embedded_resnet8_c8")
    clean = EmbeddedCorruptions(["clean"], n_per_domain=256, classes=8)
    domain = clean.domains[0]
    with torch.no_grad():
        logits = model(clean.images(domain, np.arange(256)).float() / 255)
    assert logits.shape == (256, 8)
    accuracy = (logits.argmax(1).numpy() == clean.labels(domain)).mean()
    assert accuracy > 0.9


def test_a_run_mixes_the_held_out_classes_in_as_outliers(tmp_path):
    cfg = compose_run(
        "dataset=embedded_8_2",
        "model=embedded_8",
        f"dataset.corruptions=[{C}]",
        "dataset.n_per_domain=64",
        "stream.outliers.ratio=0.2",
        "stream.outliers.source=split",
    )
    summary = run(cfg, tmp_path)
    assert set(summary["status"]) == {"complete"}
    rows = pd.read_csv(tmp_path / "predictions.csv", keep_default_na=False)
    outliers = rows[rows["outliers"] == "split"]
    assert len(outliers) == 16 and set(outliers["label"]) == {-1}  # 0.2 / 0.8 * 64
    inliers = rows[rows["outliers"] == ""]
    assert len(inliers) == 64 and inliers["label"].between(0, 7).all()
    assert rows["pred"].between(0, 7).all()


def test_pretrain_keeps_the_classes_below_k_and_checks_k():
    images, labels = torch.zeros(6, 3, 32, 32, dtype=torch.uint8), torch.tensor([0, 9, 1, 8, 7, 2])
    images[:, 0, 0, 0] = torch.arange(6, dtype=torch.uint8)
    kept_images, kept_labels = keep_classes((images, labels), 8)
    assert kept_labels.tolist() == [0, 1, 7, 2]
    assert kept_images[:, 0, 0, 0].tolist() == [0, 2, 4, 5]
    assert keep_classes((images, labels), None)[1] is labels
    with pytest.raises(SystemExit) as exc:
        pretrain(["--classes", "1"])
    assert exc.value.code == 2
