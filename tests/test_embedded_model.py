"""The shipped embedded checkpoint: integrity, data fingerprint, clean accuracy."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from ttabench.data import synthetic
from ttabench.models import embedded
from ttabench.pretrain import evaluate


def test_shipped_checkpoint_is_small_and_recorded():
    record = json.loads(embedded.CHECKPOINT.with_suffix(".json").read_text())
    assert embedded.CHECKPOINT.stat().st_size < 5_000_000
    assert record["command"].startswith("ttabench pretrain")
    assert record["dataset_fingerprint"] == synthetic.fingerprint(0)


def test_clean_test_accuracy_is_at_least_90_percent():
    images, labels = synthetic.generate("test")
    model = embedded.load_embedded()
    assert evaluate(model, torch.from_numpy(images), torch.from_numpy(labels)) >= 0.90


def test_fingerprint_mismatch_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(synthetic, "fingerprint", lambda seed=0: "f" * 64)
    with pytest.raises(ValueError, match="ttabench pretrain"):
        embedded.load_embedded()


def test_tampered_checkpoint_fails_its_sha256(tmp_path):
    path = tmp_path / "model.pt"
    shutil.copy(embedded.CHECKPOINT, path)
    shutil.copy(embedded.CHECKPOINT.with_suffix(".json"), path.with_suffix(".json"))
    with open(path, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="SHA-256"):
        embedded.load_embedded(path)


def test_missing_checkpoint_names_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothere.pt"):
        embedded.load_embedded(tmp_path / "nothere.pt")


def test_model_takes_unit_range_images_and_normalises_inside():
    model = embedded.load_embedded()
    x = torch.rand(4, 3, 32, 32)
    manual = model.net((x - 0.5) / 0.25)
    assert torch.allclose(model(x), manual)
    assert model(x).shape == (4, len(synthetic.CLASSES))


def test_iabn_twin_is_recorded_built_with_iabn_and_accurate():
    """NOTE's official protocol needs a source model trained with IABN: the shipped twin."""
    from ttabench.norms.iabn import InstanceAwareBatchNorm2d

    path = embedded.WEIGHTS / "embedded_resnet8_iabn.pt"
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["config"]["norm"] == "iabn" and "--norm iabn" in record["command"]
    assert path.stat().st_size < 5_000_000
    model = embedded.load_embedded(weights="embedded_resnet8_iabn")
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert layers and all(isinstance(m, InstanceAwareBatchNorm2d) for m in layers)
    images, labels = synthetic.generate("test")
    assert evaluate(model, torch.from_numpy(images), torch.from_numpy(labels)) >= 0.90


def test_unknown_embedded_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="valid: bn, iabn"):
        embedded.build_net(norm="layer")
