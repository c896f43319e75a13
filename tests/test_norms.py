"""The ``norm`` axis: every norm YAML applies to the embedded model, and the defining behaviour
of alpha, ema, rbn and UnMix-TNS (specs/normalization.md), checked against hand-computed values
and against a direct (B, K, C) transcription of the official UnMix-TNS forward."""

from __future__ import annotations

import copy
import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import nn

from ttabench.config import config_dir
from ttabench.methods.source import Source
from ttabench.models.embedded import load_embedded
from ttabench.models.wrapper import NormalizedModel
from ttabench.norms.alpha import AlphaNorm
from ttabench.norms.base import (
    NormLayer,
    batch_stats,
    instance_stats,
    norm_parameters,
    set_adapt,
    statistics_frozen,
)
from ttabench.norms.bn import BatchStatsNorm
from ttabench.norms.ema import EMABatchNorm, EMANorm
from ttabench.norms.iabn import IABNNorm, InstanceAwareBatchNorm2d
from ttabench.norms.rbn import RobustBatchNorm, RobustBNNorm
from ttabench.norms.unmix import SourceStatsNorm, UnMixNorm, UnMixTNS
from ttabench.run import run

from .conftest import compose_run

NORMS = sorted(p.stem for p in (config_dir() / "norm").glob("*.yaml"))
NEED_BN = dict(
    bn=BatchStatsNorm,
    alpha=AlphaNorm,
    ema=EMANorm,
    rbn=RobustBNNorm,
    unmix=UnMixNorm,
    iabn=IABNNorm,
)


def shifted_batch(n: int = 16, seed: int = 0) -> torch.Tensor:
    """Images off the source distribution (dark, low contrast)."""
    g = torch.Generator().manual_seed(seed)
    return (0.1 + 0.05 * torch.rand(n, 3, 32, 32, generator=g)).clamp(0, 1)


def make_bn(c: int = 3, seed: int = 0, eps: float = 1e-5) -> nn.BatchNorm2d:
    """A BatchNorm2d with non-trivial source statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    bn = nn.BatchNorm2d(c, eps=eps).eval()
    for tensor, low in ((bn.running_mean, -1.0), (bn.running_var, 0.5), (bn.weight, 0.8)):
        tensor.data.uniform_(low, low + 1.0, generator=g)
    bn.bias.data.normal_(0.0, 0.2, generator=g)
    return bn


def unmix_model(**kwargs) -> Source:
    return Source(UnMixNorm(**({"seed": 0} | kwargs)).apply(load_embedded()))


def official_unmix(layer: UnMixTNS, x: torch.Tensor, lam: float) -> torch.Tensor:
    """The official forward written out over (B, K, C), in float64; updates ``layer``."""
    x = x.double()
    mu, var = layer.component_mean.double(), layer.component_var.double()
    m, v = x.mean((2, 3)), x.var((2, 3), unbiased=False)
    p = torch.softmax(F.normalize(m, dim=1) @ F.normalize(mu, dim=1).T / layer.tau, dim=1)
    pk = p[:, :, None]
    mixed_mean = (1 - pk) * mu[None] + pk * m[:, None]
    mixed_var = (1 - pk) * var[None] + pk * v[:, None]
    mean = mixed_mean.mean(1)
    s2 = mixed_var.mean(1) + (mixed_mean**2).mean(1) - mean**2
    layer.component_mean.copy_(mu + lam * (pk * (m[:, None] - mu[None])).mean(0))
    layer.component_var.copy_(var + lam * (pk * (v[:, None] - var[None])).mean(0))
    out = (x - mean[:, :, None, None]) / torch.sqrt(s2[:, :, None, None] + layer.eps)
    return out * layer.weight.double()[:, None, None] + layer.bias.double()[:, None, None]


# --- every norm, configs ---------------------------------------------------------------------


@pytest.mark.parametrize("name", NORMS)
def test_every_norm_config_instantiates_and_applies_to_the_embedded_model(name):
    cfg = compose_run(f"norm={name}")
    model = Source(instantiate(cfg.norm).apply(load_embedded()))
    logits = model(shifted_batch())
    assert logits.shape == (16, 10) and torch.isfinite(logits).all()
    assert model(shifted_batch(1)).shape == (1, 10)
    if name == "iabn":  # IABN layers are BatchNorm layers (their statistics move in train mode)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        assert bns and all(isinstance(m, InstanceAwareBatchNorm2d) for m in bns)
    elif name not in ("source", "bn"):  # swapped layers carry the trainable affine parameters
        layers = [m for m in model.modules() if isinstance(m, NormLayer)]
        assert layers and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    if name not in ("source", "bn"):
        names = {n for n, _ in norm_parameters(model.model)}
        assert {"net.bn1.weight", "net.bn1.bias"} <= names


@pytest.mark.parametrize("name", sorted(NEED_BN))
def test_norms_that_need_batchnorm_give_a_clear_error_without_it(name):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4), nn.Flatten(), nn.LazyLinear(10))
    with pytest.raises(ValueError, match=f"norm={name} acts on BatchNorm layers"):
        NEED_BN[name]().apply(NormalizedModel(net, (0.5,) * 3, (0.25,) * 3))


def test_method_presets_and_norm_overrides_compose():
    for method in ("alpha", "ema", "rbn", "unmix"):
        assert compose_run(f"method={method}").hydra.runtime.choices.norm == method
    cfg = compose_run("method=unmix", "norm=unmix_imagenet", "stream.batch_size=16")
    assert cfg.hydra.runtime.choices.norm == "unmix_imagenet"
    assert (cfg.norm.bs_max, cfg.norm.batch_size, cfg.norm.num_components) == (16, 16, 16)
    cfg = compose_run("method=unmix", "norm=unmix_mixed", "norm.tau=0.1", "norm.seed=null")
    assert (cfg.norm.num_components, cfg.norm.tau, cfg.norm.seed) == (128, 0.1, None)
    assert compose_run("method=unmix", "norm=source").hydra.runtime.choices.norm == "source"


def test_norm_and_its_constants_are_stamped_into_the_summary(tmp_path):
    cfg = compose_run("method=unmix", "dataset.corruptions=[contrast]", "dataset.n_per_domain=64")
    summary = run(cfg, tmp_path)
    row = summary.iloc[-1]
    assert row.status == "complete" and row.norm == "unmix"
    assert "num_components=16" in row.norm_params and "bs_max=64" in row.norm_params
    assert "batch_size=64" in row.norm_params and "tau=0.07" in row.norm_params
    assert pd.read_csv(tmp_path / "summary.csv").norm_params.iloc[0] == row.norm_params


def test_swapped_layers_backpropagate_into_their_affine_parameters():
    """What a gradient method on top of any norm (TENT on unmix, RoTTA on rbn) relies on: the
    affine parameters are found and trained, also after in-place statistic updates."""
    for norm in (AlphaNorm(), EMANorm(), RobustBNNorm(), UnMixNorm(seed=0)):
        model = norm.apply(load_embedded()).requires_grad_(False)
        params = [p.requires_grad_(True) for _, p in norm_parameters(model)]
        assert len(params) == 2 * sum(isinstance(m, NormLayer) for m in model.modules())
        x = shifted_batch(4)
        # Two forwards (each updating statistics in place) before one backward.
        loss = model(x).logsumexp(1).sum() + model(x.flip(3)).logsumexp(1).sum()
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
        x = x.requires_grad_(True)  # gradients also flow through the statistics
        model(x).logsumexp(1).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert set_adapt(model, False) == len(params) // 2
        assert not any(m.adapt for m in model.modules() if isinstance(m, NormLayer))


def test_fast_statistics_match_the_direct_ones_even_far_from_zero():
    for offset in (0.0, 100.0):
        x = torch.randn(5, 4, 6, 6, dtype=torch.float64) + offset
        m, v = instance_stats(x.float())
        assert torch.allclose(m.double(), x.mean((2, 3)), atol=1e-5 * (1 + offset))
        assert torch.allclose(v.double(), x.var((2, 3), unbiased=False), rtol=1e-4)
        mean, var = batch_stats(x.float())
        assert torch.allclose(mean.double(), x.mean((0, 2, 3)), atol=1e-5 * (1 + offset))
        assert torch.allclose(var.double(), x.var((0, 2, 3), unbiased=False), rtol=1e-4)
    layer = UnMixNorm(seed=0).apply(nn.Sequential(make_bn(4)))[0]
    layer.adapt = False
    x = torch.randn(3, 4, 5, 5)
    with torch.no_grad():  # fused eval-BatchNorm path vs the differentiable scale/shift path
        fast = layer(x)
    assert torch.allclose(layer(x.requires_grad_(True)), fast, atol=1e-5)


# --- alpha, ema, rbn -------------------------------------------------------------------------


def test_alpha_interpolates_between_source_and_bn():
    x = shifted_batch()
    source = Source(load_embedded())(x)
    bn = Source(BatchStatsNorm().apply(load_embedded()))(x)
    assert torch.allclose(Source(AlphaNorm(0.0).apply(load_embedded()))(x), source, atol=1e-5)
    biased_one = AlphaNorm(1.0, unbiased=False)  # a = 1 with the biased variance is bn
    assert torch.allclose(Source(biased_one.apply(load_embedded()))(x), bn, atol=1e-4)
    bn2d, x4 = make_bn(), torch.randn(4, 3, 5, 5) * 2 + 1
    mixed = 0.3 * x4.mean((0, 2, 3)) + 0.7 * bn2d.running_mean
    mixed_var = 0.3 * x4.var((0, 2, 3), unbiased=False) + 0.7 * bn2d.running_var
    expected = F.batch_norm(x4, mixed, mixed_var, bn2d.weight, bn2d.bias, False, 0.0, bn2d.eps)
    layer = AlphaNorm(0.3, unbiased=False).apply(nn.Sequential(bn2d))[0]
    assert torch.allclose(layer(x4), expected, atol=1e-5)


def test_ema_one_pass_updates_by_the_pytorch_rule_then_normalises_with_the_updated_stats():
    bn = make_bn(1)
    bn.running_mean.fill_(1.0), bn.running_var.fill_(2.0)
    layer = EMABatchNorm(bn, momentum=0.1, two_pass=False)
    x = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(1, 1, 2, 2)  # mean 3, unbiased var 20/3
    out = layer(x)
    mean, var = 0.9 * 1.0 + 0.1 * 3.0, 0.9 * 2.0 + 0.1 * 20.0 / 3.0
    assert math.isclose(layer.running_mean.item(), mean, rel_tol=1e-6)
    assert math.isclose(layer.running_var.item(), var, rel_tol=1e-6)
    expected = bn.weight.item() * (x - mean) / math.sqrt(var + bn.eps) + bn.bias.item()
    assert torch.allclose(out, expected, atol=1e-6)
    layer.adapt = False
    assert torch.allclose(layer(x), expected, atol=1e-6)  # no second update
    assert EMANorm(0.3).apply(nn.Sequential(make_bn()))[0].momentum == 0.3


def two_bn_layers() -> nn.Sequential:
    """BN -> ReLU -> BN, one channel each, with source statistics (1, 2) and (0.5, 0.25) and
    affine (w, b) = (2, 0.5) and (1.5, -1): small enough to compute by hand."""
    first, second = make_bn(1), make_bn(1)
    for bn, (mean, var, w, b) in ((first, (1.0, 2.0, 2.0, 0.5)), (second, (0.5, 0.25, 1.5, -1.0))):
        bn.running_mean.fill_(mean), bn.running_var.fill_(var)
        bn.weight.data.fill_(w), bn.bias.data.fill_(b)
    return nn.Sequential(first, nn.ReLU(), second)


TWO_LAYER_X = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(1, 1, 2, 2)


def _hand_bn(v: torch.Tensor, mean: float, var: float, w: float, b: float) -> torch.Tensor:
    return w * (v - mean) / math.sqrt(var + 1e-5) + b


def _moved(mean: float, var: float, v: torch.Tensor) -> tuple[float, float]:
    """PyTorch's train-mode update, momentum 0.1, unbiased variance."""
    return 0.9 * mean + 0.1 * v.mean().item(), 0.9 * var + 0.1 * v.var(unbiased=True).item()


def test_ema_two_pass_equals_the_reference_train_then_eval_rule_by_hand():
    """The reference norm_ema: a train-mode pass moves each layer's running statistics with the
    statistics of inputs normalised by the earlier layers' *batch* statistics, then an
    eval-mode pass normalises with the updated ones. Computed by hand on BN -> ReLU -> BN."""
    x = TWO_LAYER_X
    # pass 1 (train mode): layer 1 normalises with the batch statistics (mean 3, biased var 5)
    h = torch.relu(_hand_bn(x, 3.0, 5.0, 2.0, 0.5))
    mean1, var1 = _moved(1.0, 2.0, x)
    mean2, var2 = _moved(0.5, 0.25, h)
    # pass 2 (eval mode): both layers with the updated running statistics
    expected = _hand_bn(torch.relu(_hand_bn(x, mean1, var1, 2.0, 0.5)), mean2, var2, 1.5, -1.0)
    model = EMANorm().apply(two_bn_layers())
    out = model(x)
    assert torch.allclose(out, expected, atol=1e-5)
    assert math.isclose(model[2].running_mean.item(), mean2, rel_tol=1e-5)
    assert math.isclose(model[2].running_var.item(), var2, rel_tol=1e-5)
    # The one-pass rule gives layer 2 other statistics on the same model: the test can tell.
    one = EMANorm(rule="one_pass").apply(two_bn_layers())
    one_out = one(x)
    g = torch.relu(_hand_bn(x, mean1, var1, 2.0, 0.5))  # layer 2 sees the *updated* layer 1
    one_mean2, one_var2 = _moved(0.5, 0.25, g)
    assert torch.allclose(one_out, _hand_bn(g, one_mean2, one_var2, 1.5, -1.0), atol=1e-5)
    assert not torch.allclose(one_out, out, atol=1e-3)
    with statistics_frozen(model):  # no first pass, no update: the stored statistics
        assert torch.allclose(model(x), expected, atol=1e-5)
    assert math.isclose(model[2].running_mean.item(), mean2, rel_tol=1e-5)


def _reference_norm_ema(model: nn.Module, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """mariodoebler/test-time-adaptation's EMABatchNorm.forward on torch's own BatchNorm:
    ``model.train(); model(x); model.eval(); return model(x)``."""
    outs = []
    with torch.no_grad():
        for x in batches:
            model.train()
            model(x)
            model.eval()
            outs.append(model(x))
    return outs


def test_ema_default_matches_the_reference_on_the_embedded_model_over_a_stream():
    batches = [shifted_batch(16, seed) for seed in range(4)]
    reference = _reference_norm_ema(load_embedded(), batches)
    ours = Source(EMANorm().apply(load_embedded()))
    assert compose_run("method=ema").norm.rule == "two_pass"
    for x, ref in zip(batches, reference, strict=True):
        out = ours(x)
        assert torch.allclose(out, ref, atol=1e-4)
        assert torch.equal(out.argmax(1), ref.argmax(1))
    # A deep copy (teachers, reset snapshots) keeps a working first pass of its own.
    twin = copy.deepcopy(ours)
    assert torch.allclose(twin(batches[0]), ours(batches[0]), atol=1e-5)


def test_alpha_default_takes_the_unbiased_batch_variance_like_the_reference():
    """Reference AlphaBatchNorm: the batch variance is the ``running_var`` of a train-mode,
    momentum-1 BatchNorm, i.e. unbiased. By hand on BN -> ReLU -> BN with a = 0.25."""
    x, a = TWO_LAYER_X, 0.25
    layer1 = ((1 - a) * 1.0 + a * 3.0, (1 - a) * 2.0 + a * 20.0 / 3.0)  # unbiased var 20/3
    h = torch.relu(_hand_bn(x, *layer1, 2.0, 0.5))
    layer2 = ((1 - a) * 0.5 + a * h.mean().item(), (1 - a) * 0.25 + a * h.var().item())
    expected = _hand_bn(h, *layer2, 1.5, -1.0)
    assert torch.allclose(AlphaNorm(a).apply(two_bn_layers())(x), expected, atol=1e-5)
    assert compose_run("method=alpha").norm.unbiased is True
    biased = (1 - a) * 2.0 + a * 5.0  # the named option: biased variance 5
    h_b = torch.relu(_hand_bn(x, layer1[0], biased, 2.0, 0.5))
    var_b = (1 - a) * 0.25 + a * h_b.var(unbiased=False).item()
    expected_b = _hand_bn(h_b, (1 - a) * 0.5 + a * h_b.mean().item(), var_b, 1.5, -1.0)
    out_b = AlphaNorm(a, unbiased=False).apply(two_bn_layers())(x)
    assert torch.allclose(out_b, expected_b, atol=1e-5)
    assert not torch.allclose(out_b, expected, atol=1e-3)
    # the reference transcribed: train-mode momentum-1 BatchNorm gives the batch statistics
    net = load_embedded()
    probe = nn.BatchNorm2d(3, affine=False, momentum=1.0).train()
    xs = shifted_batch(8)
    probe(xs)
    assert torch.allclose(probe.running_var, xs.var((0, 2, 3), unbiased=True), rtol=1e-4)
    assert torch.allclose(AlphaNorm(0.0).apply(net)(xs), load_embedded()(xs), atol=1e-5)


def test_rbn_moves_its_stats_by_rate_a_with_biased_variance_and_uses_them():
    bn = make_bn(1)
    bn.running_mean.fill_(1.0), bn.running_var.fill_(2.0)
    layer = RobustBatchNorm(bn, alpha=0.05)
    x = torch.tensor([0.0, 2.0, 4.0, 6.0]).view(2, 1, 1, 2)  # mean 3, biased var 5
    out = layer(x)
    mean, var = 0.95 * 1.0 + 0.05 * 3.0, 0.95 * 2.0 + 0.05 * 5.0
    assert math.isclose(layer.running_mean.item(), mean, rel_tol=1e-6)
    assert math.isclose(layer.running_var.item(), var, rel_tol=1e-6)
    expected = bn.weight.item() * (x - mean) / math.sqrt(var + bn.eps) + bn.bias.item()
    assert torch.allclose(out, expected, atol=1e-6)
    layer.eval().adapt = False  # RoTTA's prediction pass: stored statistics, no update
    assert torch.allclose(layer(x), expected, atol=1e-6)
    assert math.isclose(layer.running_mean.item(), mean, rel_tol=1e-6)


# --- UnMix-TNS -------------------------------------------------------------------------------


def test_unmix_output_of_a_sample_does_not_depend_on_the_rest_of_its_batch():
    x, others = shifted_batch(8), shifted_batch(8, seed=1).flip(2) * 3
    alone = unmix_model()(x[:1])  # batch size 1, no special case
    in_batch = unmix_model()(x)[:1]
    with_others = unmix_model()(torch.cat([x[:1], others]))[:1]
    assert torch.isfinite(alone).all() and torch.allclose(alone, in_batch, atol=1e-5)
    assert torch.allclose(alone, with_others, atol=1e-5)
    bn = Source(BatchStatsNorm().apply(load_embedded()))  # contrast: bn depends on the batch
    assert not torch.allclose(bn(x)[:1], bn(torch.cat([x[:1], others]))[:1], atol=1e-3)


def test_unmix_matches_the_official_forward_and_update_over_several_batches():
    layer = UnMixTNS(
        make_bn(6), 5, 0.5, 0.07, 0.1, 64, 16, generator=torch.Generator().manual_seed(3)
    )
    reference = copy.deepcopy(layer)
    lam = 1 - 0.9 ** (16 / 64)
    for step in range(3):
        x = torch.randn(7, 6, 4, 4, generator=torch.Generator().manual_seed(step)) * 1.5 + 0.3
        assert torch.allclose(layer(x).double(), official_unmix(reference, x, lam), atol=1e-4)
        assert torch.allclose(layer.component_mean, reference.component_mean, atol=1e-5)
        assert torch.allclose(layer.component_var, reference.component_var, atol=1e-5)


def test_unmix_one_update_against_a_hand_computed_example():
    """C = 2, K = 2, tau = 1, lambda = 0.5; components mu_1 = (1, 0), mu_2 = (0, 1), var_1 = 1,
    var_2 = 2; sample 1 has m = (2, 0), v = (1, 0), sample 2 m = (0, 2), v = (0, 0). So cos is 1
    with the matching component and 0 with the other: p = (s, 1 - s), s = e / (1 + e)."""
    bn = nn.BatchNorm2d(2).eval()
    layer = UnMixTNS(bn, 2, 0.5, tau=1.0, momentum=0.1, bs_max=64, batch_size=64, update_rate=0.5)
    layer.component_mean.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
    layer.component_var.copy_(torch.tensor([[1.0, 1.0], [2.0, 2.0]]))
    x = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]]], [[[0.0, 0.0]], [[2.0, 2.0]]]])  # (2, 2, 1, 2)
    out = layer(x)
    s, lam = math.e / (1 + math.e), 0.5
    # Sample 1, channel 0: mu' = (1 + s, 2 - 2s), var' = (1, 1 + s) over the two components.
    mu_b = (3 - s) / 2
    sigma2 = (2 + s) / 2 + ((1 + s) ** 2 + (2 - 2 * s) ** 2) / 2 - mu_b**2
    expected = (torch.tensor([1.0, 3.0]) - mu_b) / math.sqrt(sigma2 + bn.eps)
    assert torch.allclose(out[0, 0, 0], expected, atol=1e-5)
    # mu_k += lam * mean_b p_bk (m_b - mu_k): a batch mean, not responsibility-weighted.
    mean = [[1 + lam * (s - 0.5), lam * (1 - s)], [lam * (1 - s), 1 + lam * (s - 0.5)]]
    var = [[1 - lam * (1 - s) / 2, 1 - lam / 2], [2 - lam * (1 + s) / 2, 2 - lam]]
    assert torch.allclose(layer.component_mean, torch.tensor(mean), atol=1e-6)
    assert torch.allclose(layer.component_var, torch.tensor(var), atol=1e-6)


def test_unmix_mixture_mean_moves_by_lambda_over_k_whatever_the_assignments():
    """sum_k p_bk = 1, so mean_k mu_k moves by lambda / K (mean_b m_b - mean_b sum_k p_bk mu_k)
    per batch: the time constant K / lambda that results/README.md quotes for slow i.i.d.
    convergence. A responsibility-normalised update (dividing by sum_b p_bk) breaks it."""
    layer = UnMixNorm(num_components=8, seed=3, update_rate=0.3).apply(nn.Sequential(make_bn(5)))
    layer = layer[0]
    x = 2.0 + torch.randn(32, 5, 6, 6, generator=torch.Generator().manual_seed(4))
    mu = layer.component_mean.double().clone()
    m = x.double().mean((2, 3))
    p = torch.softmax(F.normalize(m, dim=1) @ F.normalize(mu, dim=1).T / layer.tau, dim=1)
    assert p.max(1).values.min() < 0.99 and p.mean(0).max() > 1.5 / 8  # soft and unbalanced
    layer(x)
    moved = layer.component_mean.double().mean(0) - mu.mean(0)
    expected = 0.3 / 8 * (m.mean(0) - (p @ mu).mean(0))
    assert torch.allclose(moved, expected, atol=1e-5)


def test_unmix_k1_starts_from_the_source_stats_and_normalises_per_instance():
    bn = make_bn(3)
    layer = UnMixNorm(num_components=1).apply(nn.Sequential(bn))[0]
    assert torch.equal(layer.component_mean[0], bn.running_mean)
    assert torch.equal(layer.component_var[0], bn.running_var)
    x = torch.randn(4, 3, 5, 5)
    instance = F.instance_norm(x, weight=bn.weight, bias=bn.bias, eps=bn.eps)
    assert torch.allclose(layer(x), instance, atol=1e-5)  # one component: p = 1


def test_unmix_initial_uniform_mixture_keeps_the_source_mean_and_variance_in_expectation():
    bn = make_bn(4)
    layer = UnMixNorm(num_components=20000, seed=0).apply(nn.Sequential(bn))[0]
    mu, var = layer.component_mean, layer.component_var
    assert torch.allclose(var, 0.5 * bn.running_var.expand_as(var))  # (1 - alpha) var_s
    mixture_var = var.mean(0) + mu.var(0, unbiased=False)
    assert torch.allclose(mu.mean(0), bn.running_mean, atol=0.02)
    assert torch.allclose(mixture_var, bn.running_var, rtol=0.03)
    again = UnMixNorm(num_components=20000, seed=0).apply(nn.Sequential(make_bn(4)))[0]
    assert torch.equal(again.component_mean, mu)  # seeded


def test_unmix_updates_in_eval_and_train_mode_alike_and_reset_restores_the_components():
    method = unmix_model()
    layer = method.model.net.bn1
    initial = layer.component_mean.clone()
    assert not torch.allclose(initial, layer.source_mean.expand_as(initial))  # noisy init
    x = shifted_batch()
    first = method(x)
    assert not layer.training and not torch.equal(layer.component_mean, initial)
    train = unmix_model()
    train.model.train()
    assert torch.allclose(train(x), first, atol=1e-6)
    assert torch.allclose(train.model.net.bn1.component_mean, layer.component_mean)
    method(shifted_batch(seed=2))
    method.reset()
    assert torch.equal(layer.component_mean, initial)
    assert torch.allclose(method(x), first, atol=1e-6)


def test_unmix_update_rate_follows_the_batch_size_rule():
    bn = make_bn()

    def layer(**kw):  # K = 4, alpha = 0.5, tau = 0.07
        return UnMixTNS(bn, 4, 0.5, 0.07, **({"momentum": 0.1, "bs_max": 64} | kw))

    assert math.isclose(layer(batch_size=64).rate(7), 0.1)
    assert math.isclose(layer(batch_size=1).rate(64), 1 - 0.9 ** (1 / 64))
    assert math.isclose(layer(batch_size=16, bs_max=16).rate(3), 0.1)
    assert math.isclose(layer(batch_size=None).rate(32), 1 - 0.9**0.5)
    assert layer(batch_size=64, update_rate=0.2).rate(64) == 0.2
    assert UnMixNorm(momentum=0.3).apply(nn.Sequential(bn))[0].momentum == 0.3


def test_unmix_batchnorm1d_modes():
    def net():
        return nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(2), nn.BatchNorm1d(3)).eval()

    x, source = torch.randn(2, 3, 4, 4), net()
    layers = UnMixNorm().apply(copy.deepcopy(source))
    assert isinstance(layers[2], SourceStatsNorm) and isinstance(layers[0], UnMixTNS)
    assert torch.allclose(layers[2](x.flatten(2)), source[2](x.flatten(2)), atol=1e-6)
    assert isinstance(UnMixNorm(bn1d="keep").apply(net())[2], nn.BatchNorm1d)
    assert isinstance(UnMixNorm(bn1d="unmix").apply(net())[2], UnMixTNS)
    assert UnMixNorm(bn1d="unmix").apply(net())(x).shape == (2, 3, 16)  # over the length axis
    with pytest.raises(ValueError, match="bn1d=source"):
        UnMixNorm(bn1d="unmix").apply(nn.Sequential(nn.BatchNorm1d(3)))(torch.randn(2, 3))


@pytest.mark.parametrize("method", ["ema", "tent", "sar", "eata", "cotta"])
def test_ema_statistics_move_once_per_test_batch_under_any_method(method, monkeypatch):
    """The first (train-mode) pass runs once per batch and model: not again for SAR's second
    forward, EATA's Fisher pass on source data or a teacher's augmented views (inside
    ``statistics_frozen``). CoTTA's student, teacher and anchor each forward the batch once,
    so each of their layers moves once, as under norm=bn each normalises with the batch."""
    from .test_methods import make_method
    from .test_methods import shifted_batch as method_batch

    adapter = make_method(f"method={method}", "norm=ema")
    updated: list[int] = []
    original = EMABatchNorm._update
    monkeypatch.setattr(
        EMABatchNorm, "_update", lambda self, x: updated.append(id(self)) or original(self, x)
    )
    adapter(method_batch())
    student = {id(m) for m in adapter.model.modules() if isinstance(m, EMABatchNorm)}
    assert student and student <= set(updated)
    assert len(updated) == len(set(updated))  # no layer twice
