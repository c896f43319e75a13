"""Retraining the embedded model (slow: minutes on 2 CPU cores)."""

from __future__ import annotations

import json

import pytest
import torch

from ttabench.models.embedded import load_embedded
from ttabench.pretrain import PretrainConfig, main, save, train


@pytest.mark.slow
def test_pretraining_is_deterministic():
    cfg = PretrainConfig(epochs=1)
    first, acc_first, _ = train(cfg)
    second, acc_second, _ = train(cfg)
    assert acc_first == acc_second
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.slow
def test_the_recorded_command_retrains_a_model_above_90_percent(tmp_path):
    out = tmp_path / "model.pt"
    assert main(["--out", str(out)]) == 0
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["clean_test_accuracy"] >= 0.90
    load_embedded(out)  # its record verifies (SHA-256, data fingerprint)


def test_save_writes_a_record_that_the_loader_verifies(tmp_path):
    """Fast: the record of a (not retrained) model names the command, hash and data."""
    from ttabench.pretrain import save

    out = tmp_path / "model.pt"
    record = save(load_embedded(), PretrainConfig(), 0.99, 1.0, out, ["--epochs", "8"])
    assert record["command"] == "ttabench pretrain --epochs 8"
    assert json.loads(out.with_suffix(".json").read_text()) == record
    load_embedded(out)  # SHA-256 and data fingerprint check out


@pytest.mark.slow
def test_pretraining_with_iabn_trains_iabn_layers_and_records_it(tmp_path):
    from ttabench.norms.iabn import InstanceAwareBatchNorm2d

    cfg = PretrainConfig(epochs=1, norm="iabn")
    model, acc, _ = train(cfg)
    layers = [m for m in model.modules() if isinstance(m, InstanceAwareBatchNorm2d)]
    assert layers and all(int(m.num_batches_tracked) > 0 for m in layers)
    out = tmp_path / "iabn.pt"
    save(model, cfg, acc, 1.0, out, ["--norm", "iabn"])
    loaded = load_embedded(out)
    assert isinstance(loaded.net.bn1, InstanceAwareBatchNorm2d)
    x = torch.rand(4, 3, 32, 32)
    assert torch.allclose(loaded(x), model.eval()(x), atol=1e-5)
