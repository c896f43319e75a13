"""The method contract (forward returns logits and adapts; reset restores), source and bn."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ttabench.config import config_dir
from ttabench.methods.base import TTAMethod
from ttabench.methods.defaults import apply_dataset_defaults
from ttabench.methods.source import Source
from ttabench.models.embedded import load_embedded
from ttabench.models.small_resnet import SmallResNet
from ttabench.models.wrapper import NormalizedModel
from ttabench.norms.bn import BatchStatsNorm
from ttabench.run import build_method

from .conftest import compose_run

METHODS = sorted(p.stem for p in (config_dir() / "method").glob("*.yaml"))


def shifted_batch(n: int = 32) -> torch.Tensor:
    """Images far from the source distribution (dark, low contrast, noisy)."""
    g = torch.Generator().manual_seed(0)
    return (0.1 + 0.05 * torch.rand(n, 3, 32, 32, generator=g)).clamp(0, 1)


def make_method(*overrides: str) -> TTAMethod:
    """The method of a composed run config, resolved and built as ``run`` builds it."""
    cfg = compose_run(*overrides)
    apply_dataset_defaults(cfg, cfg.hydra.overrides.task)
    return build_method(cfg, 10, "cpu")


@pytest.mark.parametrize("name", METHODS)
def test_every_method_config_honours_the_contract(name):
    method = make_method(f"method={name}")
    assert isinstance(method, TTAMethod)
    x = shifted_batch()
    torch.manual_seed(0)
    logits = method(x)
    assert logits.shape == (32, 10) and torch.isfinite(logits).all()
    method.reset()
    torch.manual_seed(0)
    assert torch.allclose(method(x), logits, atol=1e-5), "reset must restore the initial state"
    one = method(x[:1])  # batch size 1 must work for every method
    assert one.shape == (1, 10)


def test_source_matches_the_frozen_model_and_keeps_running_stats():
    model = load_embedded()
    expected = model(shifted_batch())
    method = Source(load_embedded())
    assert torch.allclose(method(shifted_batch()), expected)
    bn = method.model.net.bn1
    assert bn.running_mean is not None and not bn.training


def test_bn_uses_batch_statistics_and_differs_from_source_on_shifted_data():
    x = shifted_batch()
    source, bn = Source(load_embedded()), Source(BatchStatsNorm().apply(load_embedded()))
    assert not torch.allclose(source(x), bn(x), atol=1e-3)
    # With batch statistics, a sample's output depends on the rest of its batch.
    assert not torch.allclose(bn(x)[:1], bn(torch.cat([x[:1], x[1:].flip(2) * 0.5]))[:1])


def test_bn_normalises_each_batch_to_zero_mean_unit_variance():
    method = Source(BatchStatsNorm().apply(load_embedded()))
    seen = {}
    method.model.net.bn1.register_forward_hook(lambda m, i, o: seen.update(out=o))
    method(shifted_batch())
    w, b = method.model.net.bn1.weight, method.model.net.bn1.bias
    normalised = (seen["out"] - b.view(1, -1, 1, 1)) / w.view(1, -1, 1, 1)
    assert normalised.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (normalised.var(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-2


def test_method_bn_is_source_with_norm_bn_and_norm_can_be_overridden():
    assert compose_run("method=bn").hydra.runtime.choices.norm == "bn"
    assert compose_run("method=source").hydra.runtime.choices.norm == "source"
    assert compose_run("method=bn", "norm=source").hydra.runtime.choices.norm == "source"


def test_norm_bn_without_batchnorm_layers_is_a_clear_error():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with pytest.raises(ValueError, match="BatchNorm"):
        BatchStatsNorm().apply(NormalizedModel(net, (0.5,) * 3, (0.25,) * 3))


def test_reset_restores_buffers_changed_during_adaptation():
    class Counting(TTAMethod):
        def configure(self):
            super().configure()
            self.register_buffer("seen", torch.zeros(()))

        def forward(self, x):
            self.seen += len(x)
            return self.model(x)

    method = Counting(NormalizedModel(SmallResNet(), (0.5,) * 3, (0.25,) * 3))
    method(shifted_batch(8))
    assert method.seen == 8
    method.reset()
    assert method.seen == 0
