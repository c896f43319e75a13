"""The behaviour that defines each adapting method (TENT, ETA/EATA, SAR, DeYO, LAME), the
method interface (trained parameters through the norm contract, costs, exact reset) and its
per-dataset defaults and knob checks."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from omegaconf import OmegaConf

from ttabench.config import config_dir
from ttabench.data.source_data import source_data_provider
from ttabench.methods.base import MethodContext
from ttabench.methods.deyo import DeYO
from ttabench.methods.eata import EATA
from ttabench.methods.entropy import softmax_entropy
from ttabench.methods.lame import LAME, laplacian_optimization
from ttabench.methods.sar import SAR
from ttabench.methods.tent import Tent
from ttabench.models.embedded import load_embedded
from ttabench.norms.base import NormLayer, norm_parameters
from ttabench.norms.bn import BatchStatsNorm
from ttabench.norms.unmix import UnMixNorm

from .test_methods import make_method, shifted_batch

METHODS = sorted(p.stem for p in (config_dir() / "method").glob("*.yaml"))
ADAM = functools.partial(torch.optim.Adam, lr=1e-3)
SGD = functools.partial(torch.optim.SGD, lr=1e-3, momentum=0.9)


def bn_model():
    return BatchStatsNorm().apply(load_embedded())


def context(**kw) -> MethodContext:
    return MethodContext(num_classes=10, batch_size=32, **kw)


def changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if not torch.equal(before[k], after[k])}


def snapshot(method) -> dict:
    return {k: v.detach().clone() for k, v in method.model.state_dict().items()}


def mixed_batch(n: int = 32) -> torch.Tensor:
    """Half shifted (uncertain) and half ordinary-looking images."""
    g = torch.Generator().manual_seed(1)
    return torch.cat([shifted_batch(n // 2), torch.rand(n - n // 2, 3, 32, 32, generator=g)])


# -- TENT ------------------------------------------------------------------------------------


def test_tent_lowers_the_entropy_of_a_repeated_batch_and_moves_only_norm_affine():
    method = Tent(bn_model(), context(), ADAM)
    x = shifted_batch()
    before = snapshot(method)
    entropies = [softmax_entropy(method(x)).mean().item() for _ in range(8)]
    assert entropies[-1] < entropies[0] - 0.05
    norm_names = {name for name, _ in norm_parameters(method.model)}
    assert changed(before, snapshot(method)) == norm_names


def test_tent_trains_the_layers_the_norm_swapped_in():
    unmix = Tent(UnMixNorm(seed=0).apply(load_embedded()), context(), ADAM)
    trained = {id(p) for group in unmix.optimizer.param_groups for p in group["params"]}
    layers = [m for m in unmix.model.modules() if isinstance(m, NormLayer)]
    assert layers and trained == {id(p) for m in layers for p in (m.weight, m.bias)}
    bn = Tent(bn_model(), context(), ADAM)
    trained = {id(p) for group in bn.optimizer.param_groups for p in group["params"]}
    bns = [m for m in bn.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert trained == {id(p) for m in bns for p in (m.weight, m.bias)}


def test_tent_costs_one_forward_and_one_backward_per_sample():
    method = Tent(bn_model(), context(), ADAM)
    method(shifted_batch(32))
    assert method.pop_costs() == {
        "forwards": 32,
        "backwards": 32,
        "nonfinite_loss": 0,
        "recoveries": 0,
    }


def test_a_non_finite_loss_is_noted_not_raised():
    method = Tent(bn_model(), context(), functools.partial(torch.optim.SGD, lr=1.0))
    with torch.no_grad():
        method.model.net.bn1.weight.fill_(float("nan"))
    logits = method(shifted_batch())
    assert not torch.isfinite(logits).all()
    assert method.pop_costs()["nonfinite_loss"] == 1


# -- ETA / EATA ------------------------------------------------------------------------------


def test_eta_selects_reliable_then_non_redundant_samples():
    method = EATA(
        bn_model(), context=context(), optim=ADAM, e_margin=0.4, d_margin=0.4, fisher_alpha=0
    )
    reference = bn_model()
    x = mixed_batch()
    with torch.no_grad():
        logits = reference(x)
    entropy, probs = softmax_entropy(logits), logits.softmax(1)
    reliable = entropy < 0.4 * math.log(10)
    assert 0 < reliable.sum() < len(x), "the batch must have samples on both sides"
    method(x)
    assert method.pop_costs()["backwards"] == int(reliable.sum())
    assert torch.allclose(method.probs_ema, probs[reliable].mean(0), atol=1e-5)
    # The same batch again: the updated weights give new p; the cosine rule against m drops
    # the samples that repeat what m already holds.
    m = method.probs_ema.clone()
    with torch.no_grad():
        logits2 = method.model(x)
    entropy2, probs2 = softmax_entropy(logits2), logits2.softmax(1)
    cosine = torch.nn.functional.cosine_similarity(m.unsqueeze(0), probs2, dim=1)
    expected = ((entropy2 < 0.4 * math.log(10)) & (cosine.abs() < 0.4)).sum()
    assert expected < (entropy2 < 0.4 * math.log(10)).sum(), "the cosine rule must drop some"
    method(x)
    assert method.pop_costs()["backwards"] == int(expected)


def test_eta_takes_no_step_when_no_sample_is_reliable():
    method = EATA(bn_model(), context=context(), optim=ADAM, e_margin=1e-6, fisher_alpha=0)
    before = snapshot(method)
    method(shifted_batch())
    assert not changed(before, snapshot(method)) and method.pop_costs()["backwards"] == 0
    assert not method.has_probs_ema


def test_eata_fisher_term_pulls_parameters_toward_the_source():
    source = source_data_provider("embedded", None, 0, 0)
    x = mixed_batch()

    def drift(alpha: float) -> float:
        """sum F (theta - theta0)^2 after five steps: the distance the term penalises."""
        method = EATA(
            bn_model(),
            context=context(source_data=source),
            optim=functools.partial(torch.optim.SGD, lr=1e-3),
            e_margin=1.0,
            d_margin=1.0,
            fisher_alpha=alpha,
            fisher_size=64,
        )
        for _ in range(5):
            method(x)
        return method._forgetting().item() / alpha

    free, anchored = drift(1e-12), drift(1e5)  # ETA-like vs a strong anchor
    assert 0 < anchored < 0.5 * free


def test_eata_fisher_is_the_mean_squared_gradient_of_self_labelled_cross_entropy():
    source = source_data_provider("embedded", None, 0, 0)
    method = EATA(
        bn_model(),
        context=context(source_data=source),
        optim=ADAM,
        fisher_alpha=1.0,
        fisher_size=64,
    )
    images, _ = source(64)
    model = bn_model()
    squares = None
    for batch in torch.split(images, 32):
        model.zero_grad()
        logits = model(batch.float() / 255)
        torch.nn.functional.cross_entropy(logits, logits.argmax(1)).backward()
        grads = [p.grad**2 for _, p in norm_parameters(model)]
        squares = grads if squares is None else [a + b for a, b in zip(squares, grads, strict=True)]
    assert torch.allclose(method.fisher_0, squares[0] / 2, rtol=1e-4, atol=1e-10)


def test_eata_without_source_data_is_a_clear_error():
    with pytest.raises(ValueError, match="source"):
        EATA(bn_model(), context=context(), optim=ADAM, fisher_alpha=1.0)


# -- SAR -------------------------------------------------------------------------------------


def test_sar_runs_two_forward_backward_passes_per_step():
    method = SAR(bn_model(), context=context(), optim=SGD, e_margin=1.0)
    method(shifted_batch(32))
    costs = method.pop_costs()
    assert (costs["forwards"], costs["backwards"]) == (64, 64)


def test_sar_skips_unreliable_samples_but_its_momentum_still_moves():
    method = SAR(bn_model(), context=context(), optim=SGD, e_margin=1e-6)
    method(shifted_batch())
    assert method.pop_costs()["backwards"] == 0
    assert method.loss_ema is None, "no reliable sample: the loss EMA is not updated"


def test_sar_recovers_the_source_model_when_its_loss_ema_falls_below_e_m():
    method = SAR(
        bn_model(),
        context=context(),
        optim=functools.partial(torch.optim.SGD, lr=0.5),
        e_margin=1.0,
        reset_constant=100.0,
    )
    before = snapshot(method)
    method(shifted_batch())
    assert method.pop_costs()["recoveries"] == 1
    assert not changed(before, snapshot(method)) and method.loss_ema is None
    official = SAR(
        bn_model(),
        context=context(),
        optim=SGD,
        e_margin=1.0,
        reset_constant=100.0,
        recovery="official",
    )
    official(shifted_batch())
    assert official.loss_ema is not None, "the official order keeps the EMA"


def test_sar_leaves_layer4_and_vit_tail_frozen():
    model = torch.nn.Module()
    model.layer3 = torch.nn.BatchNorm2d(2)
    model.layer4 = torch.nn.BatchNorm2d(2)
    model.norm = torch.nn.LayerNorm(2)
    model.fc = torch.nn.Linear(2, 2)
    method = SAR(model, context=context(), optim=SGD)
    assert [n for n, _ in method.trainable()] == ["layer3.weight", "layer3.bias"]


# -- DeYO ------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [32, 30])
def test_deyo_view_permutes_whole_patches(side):
    method = DeYO(bn_model(), context=context(), optim=ADAM)
    x = torch.rand(2, 3, side, side)
    view = method.shuffled_view(x)
    assert view.shape == x.shape
    if side % 4 == 0:
        patches = x.unfold(2, 8, 8).unfold(3, 8, 8).reshape(2, 3, 16, 64)
        shuffled = view.unfold(2, 8, 8).unfold(3, 8, 8).reshape(2, 3, 16, 64)
        for b in range(2):
            key = lambda t: sorted(t[:, i].flatten().tolist() for i in range(16))  # noqa: E731
            assert key(patches[b]) == key(shuffled[b])
        assert not torch.equal(view, x)


def test_deyo_updates_only_on_samples_whose_prediction_depends_on_shape():
    x = mixed_batch()
    strict = DeYO(
        bn_model(), context=context(), optim=ADAM, margin=1.0, plpd_threshold=1.0
    )  # PLPD <= 1
    before = snapshot(strict)
    strict(x)
    assert not changed(before, snapshot(strict)) and strict.pop_costs()["backwards"] == 0
    lax = DeYO(bn_model(), context=context(), optim=ADAM, margin=1.0, plpd_threshold=-1.0)
    lax(x)
    costs = lax.pop_costs()
    assert costs["backwards"] == len(x) and costs["forwards"] == 2 * len(x)


# -- LAME ------------------------------------------------------------------------------------


def test_lame_moves_no_parameter_and_returns_distributions():
    method = LAME(load_embedded(), context=context())
    before = snapshot(method)
    out = method(shifted_batch())
    assert not changed(before, snapshot(method))
    assert (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(32), atol=1e-5)
    assert torch.isfinite(method(shifted_batch(1))).all(), "batch size 1: no NaN"


def test_lame_matches_its_bound_optimisation_on_a_hand_computed_example():
    p = torch.tensor([[0.9, 0.1], [0.4, 0.6]])
    unary = -torch.log(p)
    kernel = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    # First update by hand: y = softmax(ln p + W p); sample 0 sees p_1 = (0.4, 0.6).
    first = laplacian_optimization(unary, kernel, max_steps=1)
    hand0 = torch.tensor([0.9 * math.exp(0.4), 0.1 * math.exp(0.6)])
    assert torch.allclose(first[0], hand0 / hand0.sum(), atol=1e-6)
    # At convergence Y is a fixed point of Eq. 7: Y = softmax(ln p + W Y).
    y = laplacian_optimization(unary, kernel)
    assert torch.allclose(y, (torch.log(p) + kernel @ y).softmax(1), atol=1e-5)
    # Sample 1 is pulled toward its confident neighbour's class.
    assert y[1, 0] > p[1, 0]


def test_lame_knn_affinity_links_each_point_to_its_nearest_other():
    method = LAME(load_embedded(), context=context(), affinity="knn", knn=1)
    feats = torch.tensor([[0.0, 1.0], [0.1, 1.0], [1.0, 0.0]])
    w = method.kernel(feats)
    assert torch.equal(w, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))


# -- the interface: reset, knobs, per-dataset defaults, combinations --------------------------


@pytest.mark.parametrize("name", METHODS)
def test_reset_equals_a_fresh_method(name):
    batches = [mixed_batch(), shifted_batch(), mixed_batch().flip(0)]

    def outputs(method):
        torch.manual_seed(3)
        return [method(x) for x in batches]

    used = make_method(f"method={name}", "method.fisher_size=64" if "eata" in name else "seed=1")
    outputs(used)
    used.reset()
    fresh = make_method(f"method={name}", "method.fisher_size=64" if "eata" in name else "seed=1")
    for a, b in zip(outputs(used), outputs(fresh), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_dataset_defaults_are_picked_and_the_command_line_wins():
    def params(*overrides):
        from ttabench.methods.defaults import apply_dataset_defaults

        from .conftest import compose_run

        cfg = compose_run(*overrides)
        used = apply_dataset_defaults(cfg, cfg.hydra.overrides.task)
        return used, OmegaConf.to_container(cfg.method)

    used, cifar100 = params("method=eata", "dataset=cifar100c")
    assert used == "cifar100c" and cifar100["d_margin"] == 0.1 and "per_dataset" not in cifar100
    used, imagenet = params("method=eata", "dataset=imagenetc", "method.optim.lr=0.5")
    assert imagenet["optim"]["_target_"] == "torch.optim.SGD" and "betas" not in imagenet["optim"]
    assert imagenet["optim"]["lr"] == 0.5 and imagenet["fisher_alpha"] == 2000.0
    used, embedded = params("method=tent", "method.optim.lr=2e-3")
    assert used == "embedded" and embedded["optim"]["lr"] == 2e-3


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.optim.lr=-1", "method.optim: Invalid learning rate"),
        ("method.optim._target_=torch.optim.Adamm", "not a torch optimizer; valid: .*Adam"),
        ("method.e_margin=1.5", "e_margin is a fraction of ln C"),
        ("method.steps=0", "method.steps must be >= 1"),
    ],
)
def test_bad_knobs_are_one_clear_line_before_any_batch(override, message, tmp_path):
    from ttabench.run import run

    from .conftest import compose_run

    with pytest.raises(ValueError, match=message):
        run(
            compose_run("method=eata" if "e_margin" in override else "method=tent", override),
            tmp_path,
        )
    assert not (tmp_path / "online.csv").exists()


def test_a_norm_preset_method_with_another_norm_is_a_clear_error():
    with pytest.raises(ValueError, match="method=bn is the norm-only preset"):
        make_method("method=bn", "norm=unmix")
    make_method("method=unmix", "norm=unmix_imagenet", "stream.batch_size=16")  # its own preset


# -- review additions: SAM's step, momentum, stateful norms, exact distances, hostile knobs ------


def test_sar_steps_with_the_gradient_taken_at_the_sam_perturbed_weights():
    x = mixed_batch()
    method = SAR(
        bn_model(),
        context=context(),
        optim=functools.partial(torch.optim.SGD, lr=1.0),
        e_margin=1.0,
    )
    theta = [p.detach().clone() for p in method.trained]
    method(x)
    reference = bn_model()
    params = [p for _, p in norm_parameters(reference)]
    softmax_entropy(reference(x)).mean().backward()
    g = [p.grad.clone() for p in params]
    norm = torch.linalg.vector_norm(torch.stack([t.norm() for t in g]))
    with torch.no_grad():
        for p, t in zip(params, g, strict=True):
            p.add_(0.05 * t / (norm + 1e-12))
    reference.zero_grad()
    softmax_entropy(reference(x)).mean().backward()  # all samples stay below ln C
    for p, start, trained in zip(params, theta, method.trained, strict=True):
        assert torch.allclose(trained, start - p.grad, atol=1e-5)


def test_sar_momentum_moves_the_weights_on_a_batch_without_reliable_samples():
    method = SAR(bn_model(), context=context(), optim=SGD, e_margin=1.0)
    method(mixed_batch())
    method.e_margin = 1e-9  # nothing reliable from now on
    before = snapshot(method)
    method(mixed_batch())
    assert method.pop_costs()["backwards"] == 64 and changed(before, snapshot(method))


@pytest.mark.parametrize("name", ["eata", "sar", "deyo"])
def test_auxiliary_passes_leave_a_stateful_norm_to_the_test_batch(name):
    """EATA's Fisher pass, SAR's second pass and DeYO's shuffled view must not move norm=ema's
    running statistics: after one batch they equal those of the norm alone on that batch."""
    extra = ["method.fisher_size=64", "method.e_margin=1.0"] if name == "eata" else []
    method = make_method(f"method={name}", "norm=ema", *extra)
    alone = make_method("method=ema")
    x = mixed_batch()
    torch.manual_seed(0)
    method(x)
    alone(x)
    stats = {k: v for k, v in alone.model.state_dict().items() if "running" in k}
    assert stats and all(torch.equal(method.model.state_dict()[k], v) for k, v in stats.items())


def test_deyo_forwards_its_view_for_the_confident_samples_only():
    x = mixed_batch()
    with torch.no_grad():
        entropy = softmax_entropy(bn_model()(x))
    fraction = float(entropy.median()) / math.log(10)  # about half the batch is confident
    confident = int((entropy < fraction * math.log(10)).sum())
    assert 0 < confident < len(x)
    method = DeYO(bn_model(), context=context(), optim=ADAM, margin=fraction)
    method(x)
    assert method.pop_costs()["forwards"] == len(x) + confident


def test_lame_rbf_with_k1_on_a_large_batch_falls_back_to_the_model_probabilities():
    method = LAME(load_embedded(), context=context(), knn=1)
    x = torch.rand(40, 3, 32, 32)
    with torch.no_grad():
        p = method.model(x).softmax(1)
    assert torch.allclose(method(x), p, atol=1e-6)


def test_a_deleted_key_stays_deleted_under_the_dataset_table():
    from ttabench.methods.defaults import apply_dataset_defaults

    from .conftest import compose_run

    cfg = compose_run(
        "method=tent", "dataset=cifar10c", "method.optim._target_=torch.optim.SGD",
        "~method.optim.betas",
    )  # fmt: skip
    apply_dataset_defaults(cfg, cfg.hydra.overrides.task)
    assert cfg.method.optim._target_ == "torch.optim.SGD" and "betas" not in cfg.method.optim


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method.rho=abc", "method.rho must be a number"),
        ("method.frozen=layer4", "method.frozen must be a list"),
        ("method.optim=5", "method.optim must be a node"),
        ("method.optim.lr=abc", "method.optim.lr must be a number"),
    ],
)
def test_hostile_knob_types_are_one_clear_line(override, message, tmp_path):
    from ttabench.run import run

    from .conftest import compose_run

    with pytest.raises(ValueError, match=message):
        run(compose_run("method=sar", override), tmp_path)
    assert "failed" in (tmp_path / "summary.csv").read_text()


@pytest.mark.gpu
@pytest.mark.parametrize("name", METHODS)
def test_every_method_adapts_on_cuda(name):
    """Method state (EATA's m, Fisher) must live with the model: two batches on the GPU."""
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from ttabench.methods.defaults import apply_dataset_defaults
    from ttabench.run import build_method

    from .conftest import compose_run

    cfg = compose_run(f"method={name}", *(["method.fisher_size=64"] if "eata" in name else []))
    apply_dataset_defaults(cfg, cfg.hydra.overrides.task)
    method = build_method(cfg, 10, "cuda")
    for x in (mixed_batch(), shifted_batch()):
        assert torch.isfinite(method(x.cuda())).all()
