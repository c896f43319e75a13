"""The behaviour that defines the memory and teacher methods (RoTTA, NOTE, CoTTA, ROID), their
composition with the norm axis, the seeded augmentation and their cost counters."""

from __future__ import annotations

import functools
import math

import pytest
import torch

from ttabench.methods.augment import CoTTAAugment, MethodRandom
from ttabench.methods.base import MethodContext
from ttabench.methods.cotta import CoTTA
from ttabench.methods.entropy import symmetric_cross_entropy
from ttabench.methods.note import NOTE, PBRSMemory
from ttabench.methods.roid import ROID, smoothed_prior, soft_likelihood_ratio
from ttabench.methods.rotta import CSTUMemory, RoTTA
from ttabench.models.embedded import load_embedded
from ttabench.norms.base import NormLayer
from ttabench.norms.bn import BatchStatsNorm
from ttabench.norms.iabn import IABNNorm, InstanceAwareBatchNorm2d, to_iabn
from ttabench.norms.rbn import RobustBNNorm
from ttabench.norms.source import SourceNorm

from .test_methods import make_method, shifted_batch

ADAM = functools.partial(torch.optim.Adam, lr=1e-3)


def context(batch_size: int = 32, seed: int = 0) -> MethodContext:
    return MethodContext(num_classes=10, batch_size=batch_size, seed=seed)


def stream(n_batches: int, batch_size: int = 32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    shift = shifted_batch(batch_size)
    return [
        (shift + 0.1 * torch.randn(shift.shape, generator=g)).clamp(0, 1) for _ in range(n_batches)
    ]


# -- RoTTA: CSTU memory -------------------------------------------------------------------


def test_cstu_memory_stays_class_balanced_on_a_class_sorted_stream():
    memory = CSTUMemory(capacity=64, num_classes=10)
    g = torch.Generator().manual_seed(0)
    for label in range(10):  # 100 samples of each class in turn: a FIFO would hold class 9 only
        for _ in range(100):
            memory.add(torch.zeros(1), label, float(torch.rand((), generator=g)))
    counts = memory.occupancy()
    assert sum(counts) == 64
    assert max(counts) <= math.ceil(64 / 10) and min(counts) >= 6, counts


def test_cstu_evicts_the_highest_timeliness_uncertainty_score():
    memory = CSTUMemory(capacity=4, num_classes=2)
    for label, u in [(0, 0.1), (0, 0.6), (1, 0.2), (1, 0.3)]:
        memory.add(torch.tensor([u]), label, u)
    assert [item[2] for item in memory.items[0]] == [4, 3]  # every item ages at every attempt
    # Class 0 is at its quota (2): its item of highest score (u 0.6) makes room for a sure one.
    assert memory.add(torch.tensor([0.0]), 0, 0.0)
    assert [item[1] for item in memory.items[0]] == [0.1, 0.0]
    # A new item scoring above every candidate is dropped.
    assert not memory.add(torch.tensor([9.0]), 0, math.log(2) * 5)
    assert [item[1] for item in memory.items[0]] == [0.1, 0.0]
    # A class below its quota in a full memory evicts from the majority classes.
    small = CSTUMemory(capacity=3, num_classes=2)
    for u in (0.5, 0.1, 0.2):
        small.add(torch.zeros(1), 0, u)
    assert small.add(torch.zeros(1), 1, 0.0) and small.occupancy() == [2, 1]
    assert [item[1] for item in small.items[0]] == [0.1, 0.2]  # the old, unsure 0.5 went


def test_cstu_score_is_timeliness_plus_normalised_uncertainty():
    memory = CSTUMemory(capacity=64, num_classes=10, lambda_t=2.0, lambda_u=0.5)
    expected = 2.0 / (1 + math.exp(-32 / 64)) + 0.5 * 1.2 / math.log(10)
    assert memory.score(32, 1.2) == pytest.approx(expected)


# -- RoTTA: method ------------------------------------------------------------------------


def rotta(norm=None, **kw) -> RoTTA:
    model = (norm or RobustBNNorm()).apply(load_embedded())
    return RoTTA(model, context=context(), optim=ADAM, **kw)


def test_rotta_scores_the_teacher_and_moves_statistics_only_on_the_memory_batch():
    method = rotta()
    source = load_embedded()
    x = shifted_batch(32)
    before = method.model.net.bn1.running_mean.clone()
    logits = method(x)  # 32 < 64 samples: no update yet
    assert torch.allclose(logits, source(x), atol=1e-5)  # RBN without update = source stats
    assert torch.equal(method.model.net.bn1.running_mean, before)
    assert torch.equal(method.teacher.net.bn1.running_mean, before)
    assert len(method.memory) > 0 and method.pop_costs()["backwards"] == 0
    method(x)  # the 64th sample triggers the update
    assert not torch.equal(method.model.net.bn1.running_mean, before)
    assert not torch.equal(method.teacher.net.bn1.running_mean, before)
    assert method.pop_costs()["backwards"] == len(method.memory)


def test_rotta_updates_every_64_samples_across_and_inside_batches():
    method = rotta()
    calls = []
    method.update = lambda: calls.append(method.seen)
    for x in stream(3, 50):  # 150 samples: updates after samples 64 and 128, mid-batch
        method(x)
    assert calls == [64, 128]


def test_rotta_moves_plain_and_iabn_statistics_in_train_mode_on_the_memory_batch():
    for norm in (SourceNorm(), IABNNorm()):
        method = rotta(norm=norm)
        before = method.teacher.net.bn1.running_mean.clone()
        method(shifted_batch(32))
        assert torch.equal(method.teacher.net.bn1.running_mean, before)
        method(shifted_batch(32))
        assert not torch.equal(method.teacher.net.bn1.running_mean, before)
        assert not method.model.training and not method.teacher.training


def test_rotta_teacher_follows_the_student_by_nu():
    method = rotta(nu=0.25)
    teacher = [p.clone() for p in method.teacher.parameters()]
    method(stream(1, 64)[0])
    for t0, t1, s in zip(
        teacher, method.teacher.parameters(), method.model.parameters(), strict=True
    ):
        assert torch.allclose(t1, 0.75 * t0 + 0.25 * s, atol=1e-6)


def test_rotta_with_unmix_trains_unmix_affine_and_moves_its_components_on_memory_only():
    method = make_method("method=rotta", "norm=unmix")
    layers = [m for m in method.model.modules() if isinstance(m, NormLayer)]
    assert layers and all(not layer.adapt for layer in layers)
    assert {id(p) for p in method.trained} <= {
        id(p) for layer in layers for p in (layer.weight, layer.bias)
    }
    components = layers[0].components.clone()
    method(shifted_batch(32))
    assert torch.equal(layers[0].components, components)
    method(shifted_batch(32))
    assert not torch.equal(layers[0].components, components)


def assert_reset_replays(method, fresh, batches: list[torch.Tensor]) -> None:
    """After ``reset`` the memory is empty and the method gives what a fresh one gives."""
    first = [method(x) for x in batches]
    method.reset()
    assert len(method.memory) == 0 and method.seen == 0
    for x, expected in zip(batches, first, strict=True):
        assert torch.allclose(method(x), expected, atol=1e-6)
        assert torch.allclose(fresh(x), expected, atol=1e-6)


def test_rotta_reset_equals_a_fresh_method():
    assert_reset_replays(rotta(), rotta(), stream(3, 50))


# -- NOTE: PBRS and IABN ------------------------------------------------------------------


def test_pbrs_keeps_predicted_classes_balanced():
    memory = PBRSMemory(64, 10, torch.Generator().manual_seed(0))
    labels = [0] * 600 + [c for c in range(1, 10) for _ in range(20)]  # 77 % class 0, in runs
    for label in labels:
        memory.add(torch.zeros(1), label)
    counts = memory.occupancy()
    assert sum(counts) == 64
    assert max(counts) - min(counts) <= 1, counts  # reservoir sampling would keep ~49 zeros


def test_pbrs_replaces_within_a_largest_class_with_probability_m_over_n():
    kept = 0
    for seed in range(400):
        memory = PBRSMemory(4, 2, torch.Generator().manual_seed(seed))
        for label in (0, 0, 1, 1):
            memory.add(torch.zeros(1), label)
        memory.seen[0] = 7  # 2 stored of 8 seen: the new one enters with probability 2/8
        kept += memory.add(torch.ones(1), 0)
    assert abs(kept / 400 - 2 / 8) < 0.06


def bn_layer() -> torch.nn.BatchNorm2d:
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3)
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    bn.bias.data.normal_()
    return bn.eval()


def test_iabn_matches_a_hand_computation_and_falls_back_below_its_threshold():
    bn = bn_layer()
    x = torch.randn(2, 3, 4, 4) * 3 + 1
    layer = to_iabn(bn, k=1.5).eval()
    length, eps = 16, bn.eps
    mu_r, var_r = bn.running_mean.view(1, 3, 1, 1), bn.running_var.view(1, 3, 1, 1)
    var_i, mu_i = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=1)
    shrink = lambda d, t: torch.sign(d) * torch.clamp(d.abs() - t, min=0)  # noqa: E731
    mu = mu_r + shrink(mu_i - mu_r, 1.5 * torch.sqrt((var_r + eps) / length))
    var = torch.clamp(var_r + shrink(var_i - var_r, 1.5 * (var_r + eps) * math.sqrt(2 / 15)), min=0)
    expected = (x - mu) / torch.sqrt(var + eps) * bn.weight.view(1, 3, 1, 1) + bn.bias.view(
        1, 3, 1, 1
    )
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert not torch.allclose(layer(x), bn(x), atol=1e-3)  # the correction is active here
    skipping = to_iabn(bn, k=1.5, skip_thres=16).eval()  # L = 16 <= threshold: BN itself
    assert torch.allclose(skipping(x), bn(x), atol=1e-5)
    skipping.train()  # in train mode: the batch statistics alone (unbiased, as NOTE's code)
    var_b, mu_b = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, correction=1)
    batch = (x - mu_b) / torch.sqrt(var_b + eps) * bn.weight.view(1, 3, 1, 1)
    assert torch.allclose(skipping(x), batch + bn.bias.view(1, 3, 1, 1), atol=1e-5)


def test_iabn_train_mode_uses_unbiased_batch_statistics_and_moves_running_ones():
    bn = bn_layer()
    layer = to_iabn(bn, k=1e9)  # infinite k: the reference statistics alone
    layer.momentum = 0.01
    layer.train()
    x = torch.randn(4, 3, 5, 5) * 2 + 0.5
    var_b, mu_b = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, correction=1)
    expected = (x - mu_b) / torch.sqrt(var_b + bn.eps) * bn.weight.view(1, 3, 1, 1) + bn.bias.view(
        1, 3, 1, 1
    )
    before = layer.running_mean.clone()
    assert torch.allclose(layer(x), expected, atol=1e-5)
    assert torch.allclose(layer.running_mean, 0.99 * before + 0.01 * mu_b.flatten(), atol=1e-6)


def test_iabn_norm_converts_standard_bn_and_keeps_an_iabn_model():
    model = IABNNorm().apply(load_embedded())
    layers = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert layers and all(isinstance(m, InstanceAwareBatchNorm2d) for m in layers)
    kept = [m for m in model.modules() if isinstance(m, InstanceAwareBatchNorm2d)]
    again = IABNNorm(k=2.0).apply(model)  # an IABN model keeps its layers, takes the norm's k
    layers = [m for m in again.modules() if isinstance(m, InstanceAwareBatchNorm2d)]
    assert [id(m) for m in layers] == [id(m) for m in kept] and all(m.k == 2.0 for m in layers)
    with pytest.raises(ValueError, match="norm.skip_thres must be an integer >= 1"):
        IABNNorm(skip_thres=0)


def test_iabn_with_cumulative_momentum_updates_like_batchnorm():
    bn = bn_layer()
    bn.momentum = None
    layer = to_iabn(bn).train()
    x = torch.randn(4, 3, 5, 5)
    layer(x)
    reference = bn_layer()
    reference.momentum = None
    reference.train()(x)
    assert torch.allclose(layer.running_var, reference.running_var, atol=1e-6)


# -- NOTE: method -------------------------------------------------------------------------


def note(norm=None, **kw) -> NOTE:
    model = (norm or IABNNorm()).apply(load_embedded())
    return NOTE(model, context=context(), optim=ADAM, **kw)


def test_note_predicts_each_sample_before_the_update_it_triggers():
    method, reference = note(update_every=4), note(update_every=4)
    x = shifted_batch(8)
    out = method(x)
    assert torch.allclose(out[:4], reference.model(x[:4]), atol=1e-5)  # before the first update
    assert not torch.allclose(out[4:], reference.model(x[4:]), atol=1e-4)  # after it
    for i in range(4):  # eval-mode IABN: a sample's prediction does not depend on the others
        assert torch.allclose(out[i : i + 1], reference.model(x[i : i + 1]), atol=1e-5)
    assert method.pop_costs()["backwards"] == 4 + 8  # memory of 4, then of 8


def test_note_predicts_alone_under_a_batch_dependent_norm():
    method = note(norm=BatchStatsNorm())
    assert not method.sample_independent
    x = shifted_batch(6)
    expected = torch.cat([method.model(x[i : i + 1]) for i in range(6)])
    assert torch.allclose(method(x), expected, atol=1e-5)


def test_note_memory_batch_moves_running_statistics_with_momentum_001():
    method = note(norm=SourceNorm(), update_every=8)  # TTAB's variant: plain BN
    bn = method.model.net.bn1
    before = bn.running_mean.clone()
    x = shifted_batch(8)
    method(x[:7])
    assert torch.equal(bn.running_mean, before)  # predictions never move them
    inputs = []
    hook = bn.register_forward_pre_hook(lambda _m, args: inputs.append(args[0].detach().clone()))
    method(x[7:])
    hook.remove()
    memory_input = inputs[-1]  # the update's forward (train mode) on the memory batch
    assert memory_input.shape[0] == len(method.memory)
    expected = 0.99 * before + 0.01 * memory_input.mean(dim=(0, 2, 3))
    assert torch.allclose(bn.running_mean, expected, atol=1e-6)
    assert not bn.training


def test_note_reset_empties_the_memory_and_equals_a_fresh_method():
    make = functools.partial(note, memory_size=8, update_every=16)  # a full PBRS draws
    assert_reset_replays(make(), make(), stream(3, 12))


def test_note_loss_is_the_mean_entropy_over_batch_and_classes_in_train_mode():
    method, reference = note(update_every=6), note(update_every=6)
    losses = []
    method.backward = lambda loss, n: losses.append(loss.detach())
    method(shifted_batch(6))
    probs = reference.model.train()(method.memory.batch()).softmax(1)
    assert torch.allclose(losses[0], -(probs * torch.log(probs + 1e-6)).mean(), atol=1e-6)


def test_note_under_unmix_predicts_the_chunk_in_one_forward():
    from ttabench.norms.unmix import UnMixNorm

    method = note(norm=UnMixNorm(seed=0))
    assert method.sample_independent  # UnMix-TNS outputs are per sample
    x = shifted_batch(6)
    expected = torch.cat([method.model(x[i : i + 1]) for i in range(6)])
    assert torch.allclose(method(x), expected, atol=1e-5)


# -- CoTTA --------------------------------------------------------------------------------


def cotta(**kw) -> CoTTA:
    return CoTTA(BatchStatsNorm().apply(load_embedded()), context=context(), optim=ADAM, **kw)


def test_cotta_scores_the_teacher_and_its_teacher_follows_the_ema_rule():
    method = cotta(ap=0.0, rst=0.0, mt=0.9)
    x = shifted_batch(16)
    expected = BatchStatsNorm().apply(load_embedded())(x)
    teacher = [p.clone() for p in method.teacher.parameters()]
    assert torch.allclose(method(x), expected, atol=1e-5)  # the teacher's, before any update
    for t0, t1, s in zip(
        teacher, method.teacher.parameters(), method.model.parameters(), strict=True
    ):
        assert torch.allclose(t1, 0.9 * t0 + 0.1 * s, atol=1e-6)
    assert any(
        not torch.equal(t0, t1) for t0, t1 in zip(teacher, method.teacher.parameters(), strict=True)
    )


def test_cotta_stochastic_restore_resets_the_expected_fraction_of_weights():
    method = cotta(rst=0.3)
    with torch.no_grad():
        for p in method.trained:
            p.add_(1.0)
    method.stochastic_restore()
    restored = total = 0
    for p, source in zip(method.trained, method.anchor.parameters(), strict=True):
        restored += int((p == source).sum())
        total += p.numel()
    assert total > 50_000 and abs(restored / total - 0.3) < 0.01


def test_cotta_averages_augmented_views_only_when_the_anchor_is_unsure_and_counts_them():
    x = shifted_batch(8)
    sure = cotta(ap=0.0, n_augment=4)
    sure(x)
    assert sure.pop_costs()["forwards"] == 3 * 8  # student, anchor, teacher
    unsure = cotta(ap=1.0, n_augment=4)
    out = unsure(x)
    assert unsure.pop_costs()["forwards"] == (3 + 4) * 8
    assert not torch.allclose(out, BatchStatsNorm().apply(load_embedded())(x), atol=1e-4)


def test_cotta_symmetric_loss_and_reset_equal_a_fresh_method():
    method = cotta(ap=1.0, n_augment=2, symmetric=True)
    batches = stream(2, 8)
    first = [method(x) for x in batches]
    method.reset()
    fresh = cotta(ap=1.0, n_augment=2, symmetric=True)
    for x, expected in zip(batches, first, strict=True):
        assert torch.allclose(method(x), expected, atol=1e-6)
        assert torch.allclose(fresh(x), expected, atol=1e-6)


# -- ROID ---------------------------------------------------------------------------------


def roid(**kw) -> ROID:
    return ROID(BatchStatsNorm().apply(load_embedded()), context=context(), optim=ADAM, **kw)


def test_roid_sample_weights_follow_diversity_and_certainty():
    method = roid()
    method.class_probs_ema.copy_(torch.tensor([0.5, 0.3] + [0.025] * 8))
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(3)) * 2
    p = logits.softmax(1)
    d = 1 - torch.nn.functional.cosine_similarity(method.class_probs_ema[None], p)
    d = (d - d.min()) / (d.max() - d.min())
    c = (p * p.log()).sum(1)  # -H
    c = (c - c.min()) / (c.max() - c.min())
    expected = torch.exp(d * c * 3) * (d >= d.mean())
    weights, keep = method.sample_weights(logits)
    assert torch.allclose(weights, expected, atol=1e-5) and torch.equal(keep, d >= d.mean())
    assert 0 < int(keep.sum()) < 6


def test_roid_prior_correction_and_soft_likelihood_ratio_formulas():
    p = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]])
    prior = p.mean(0)
    s = max(1 / 2, 1 / 3) / prior.max()
    assert torch.allclose(smoothed_prior(p), (prior + s) / (1 + 3 * s))
    q = torch.tensor([[0.995, 0.005]])
    clipped = torch.tensor([0.99, 0.005])
    expected = -(clipped * torch.log(clipped / (1 - clipped) + 1e-5)).sum()
    assert torch.allclose(soft_likelihood_ratio(q), expected[None])


def test_roid_ensembles_weights_towards_the_source_and_corrects_the_output():
    method = ROID(
        BatchStatsNorm().apply(load_embedded()),
        context=context(),
        optim=functools.partial(torch.optim.SGD, lr=0.0),
    )
    sources = [p.detach().clone() for p in method.trained]
    with torch.no_grad():
        for p in method.trained:
            p.add_(1.0)
    x = shifted_batch(16)
    logits = method.model(x).detach()
    out = method(x)
    for p, source in zip(method.trained, sources, strict=True):
        assert torch.allclose(p, source + 0.99, atol=1e-5)
    assert torch.allclose(out, logits * smoothed_prior(logits.softmax(1)), atol=1e-5)


def test_roid_survives_a_batch_of_one():
    method = roid()
    x = shifted_batch(4)
    assert torch.isfinite(method(x[:1])).all()  # min-max of one value: 0/0 guarded
    assert method.pop_costs()["nonfinite_loss"] == 0
    assert all(torch.isfinite(p).all() for p in method.trained)
    assert torch.isfinite(method(x)).all()


def test_roid_loss_is_weighted_slr_plus_consistency_over_the_configured_batch_size():
    method = roid()
    x = shifted_batch(16)[:10]  # a short last batch: still divided by the configured 32
    losses = []
    method.backward = lambda loss, n: losses.append((loss.detach(), n))
    reference = roid()
    logits = reference.model(x)
    weights, keep = reference.sample_weights(logits)
    kept = torch.nonzero(keep).flatten()
    slr = (soft_likelihood_ratio(logits.softmax(1)) * weights)[kept].sum() / 32
    method(x)
    assert losses[0][1] == 2 * len(kept)  # the kept samples and their augmented views
    view = CoTTAAugment(MethodRandom(0), padding_mode="reflect", blur_and_noise=False)(x[kept])
    augmented = reference.model(view)
    sce = symmetric_cross_entropy(augmented, logits[kept]) * weights[kept]
    assert torch.allclose(losses[0][0], slr + sce.sum() / 32, atol=1e-5)
    assert method.pop_costs()["forwards"] == 10 + len(kept)


# -- augmentation -------------------------------------------------------------------------


def test_augmentation_is_seeded_shared_across_the_batch_and_stays_in_range():
    x = shifted_batch(4)
    x[1] = x[0]
    a = CoTTAAugment(MethodRandom(7))(x)
    b = CoTTAAugment(MethodRandom(7))(x)
    c = CoTTAAugment(MethodRandom(8))(x)
    assert torch.equal(a, b) and not torch.allclose(a, c)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    plain = CoTTAAugment(MethodRandom(7), padding_mode="reflect", blur_and_noise=False)(x)
    assert torch.equal(plain[0], plain[1])  # one parameter draw for the whole batch
    assert (a[0] - a[1]).abs().max() < 0.05  # CoTTA's views differ by the pixel noise only


def test_memory_methods_run_from_their_configs_with_the_documented_norms():
    assert isinstance(make_method("method=rotta").model.net.bn1, NormLayer)  # RBN
    assert isinstance(make_method("method=note").model.net.bn1, InstanceAwareBatchNorm2d)
    assert make_method("method=cotta").model.net.bn1.running_mean is None  # test-batch stats
    assert make_method("method=roid").model.net.bn1.running_mean is None
    plain = make_method("method=note", "norm=source").model.net.bn1
    assert type(plain) is torch.nn.BatchNorm2d and plain.momentum == 0.01
