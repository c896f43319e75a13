"""Outliers in the stream (issue "Outliers"): the metrics on hand examples, the stream knob,
the sources, ID accuracy without outliers, the logged scores, and STAMP."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from tests.conftest import compose_run
from ttabench.data.outliers import WithOutliers, build_source
from ttabench.data.outliers.noise import GaussianNoise
from ttabench.domains import Domain
from ttabench.methods.base import MethodContext, outlier_score
from ttabench.methods.stamp import STAMP, BalancedMemory
from ttabench.methods.stamp import _log as stamp_log
from ttabench.models.embedded import load_embedded
from ttabench.norms.bn import BatchStatsNorm
from ttabench.outlier_metrics import auroc, fpr_at_tpr, h_score
from ttabench.results import summarize
from ttabench.run import run
from ttabench.streams import Stream, StreamPlan, batch_label_stats
from ttabench.streams.stats import mean_run_length
from ttabench.streams.stats import summarize as summarize_stream

# -- metrics on hand examples ------------------------------------------------------------------


def test_auroc_hand_examples():
    assert auroc([3.0, 2.0, 1.0], [0.0, -1.0]) == 100.0  # perfectly separated
    assert auroc([0.0, -1.0], [3.0, 2.0]) == 0.0
    assert auroc([1.0, 1.0], [1.0, 1.0]) == 50.0  # ties count half
    # pairs (in, out): (0.9 > 0.5), (0.9 > 0.1), (0.4 < 0.5), (0.4 > 0.1): 3 of 4
    assert auroc([0.9, 0.4], [0.5, 0.1]) == 75.0
    assert math.isnan(auroc([1.0], []))


def test_auroc_is_the_pairwise_probability_with_ties():
    rng = np.random.default_rng(0)
    s_in, s_out = rng.integers(0, 5, 40).astype(float), rng.integers(0, 5, 30).astype(float)
    pairs = (s_in[:, None] > s_out[None]).mean() + 0.5 * (s_in[:, None] == s_out[None]).mean()
    assert auroc(s_in, s_out) == pytest.approx(100 * pairs)


def test_fpr95_and_h_score_hand_examples():
    s_in = np.arange(100.0)  # 95 % of them are >= 5
    assert fpr_at_tpr(s_in, np.array([4.0, 5.0, 6.0, 50.0])) == 75.0
    assert fpr_at_tpr(s_in, np.array([-1.0, 4.9])) == 0.0
    assert h_score(80.0, 60.0) == pytest.approx(2 * 80 * 60 / 140)
    assert h_score(0.0, 0.0) == 0.0
    assert math.isnan(h_score(80.0, float("nan")))


def test_a_diverged_score_ranks_lowest():
    assert auroc([np.nan, 5.0], [1.0, 2.0]) == 50.0


# -- the stream knob ---------------------------------------------------------------------------

Y = np.arange(1000) % 10


def labels(domain: Domain) -> np.ndarray:
    return np.full(700, -1) if domain.outliers else Y


DOMAINS = [Domain("gaussian_noise", 5), Domain("contrast", 5)]


@pytest.mark.parametrize("ordering", ["iid", "dirichlet"])
@pytest.mark.parametrize("schedule", ["single", "continual", "mixed"])
def test_outliers_keep_every_test_index_once_and_the_test_order(ordering, schedule):
    plain = Stream(domains=schedule, labels=ordering, seed=4).build(DOMAINS, labels)
    mixed = Stream(domains=schedule, labels=ordering, seed=4, outliers={"ratio": 0.2}).build(
        DOMAINS, labels
    )
    out = mixed.outlier_mask()
    assert out.sum() == 2 * 250 and out.mean() == pytest.approx(0.2)  # 250 per 1,000
    ours = [
        (mixed.domains[d], i)
        for d, i in zip(mixed.domain_ids[~out], mixed.indices[~out], strict=True)
    ]
    theirs = [(plain.domains[d], i) for d, i in zip(plain.domain_ids, plain.indices, strict=True)]
    assert ours == theirs  # interleave: the test samples' order is the stream's without outliers
    for d in {d for d, _ in ours}:
        assert sorted(i for dom, i in ours if dom == d) == list(range(1000))
    tagged = [
        (mixed.domains[d], i)
        for d, i in zip(mixed.domain_ids[out], mixed.indices[out], strict=True)
    ]
    for d in DOMAINS:  # STAMP: the first N outliers under the same corruption
        mine = sorted(i for dom, i in tagged if dom == Domain(d.corruption, 5, "embedded_ood"))
        assert mine == list(range(250))


def test_interleave_keeps_the_label_correlation():
    plain = Stream(labels="dirichlet", delta=0.01, seed=1).build(DOMAINS[:1], labels)
    mixed = Stream(labels="dirichlet", delta=0.01, seed=1, outliers={"ratio": 0.3}).build(
        DOMAINS[:1], labels
    )
    y_plain, y_mixed = plain.labels_of(labels), mixed.labels_of(labels)
    assert mean_run_length(y_mixed[~mixed.outlier_mask()]) == mean_run_length(y_plain)
    stats = batch_label_stats(y_mixed, mixed.batch_starts, ~mixed.outlier_mask())
    assert (stats["n_classes"] <= 3).mean() > 0.8  # still few classes per batch


def test_shuffle_is_stamps_rule_and_only_for_iid():
    with pytest.raises(ValueError, match="mix=shuffle.*destroy the labels=dirichlet"):
        Stream(labels="dirichlet", outliers={"ratio": 0.2, "mix": "shuffle"})
    plan = Stream(seed=2, outliers={"ratio": 0.2, "mix": "shuffle"}).build(DOMAINS, labels)
    assert plan.outlier_mask().sum() == 500


def test_ratio_zero_is_the_stream_without_outliers():
    plain = Stream(labels="dirichlet", seed=3).build(DOMAINS, labels)
    zero = Stream(labels="dirichlet", seed=3, outliers={"ratio": 0.0}).build(DOMAINS, labels)
    some = Stream(labels="dirichlet", seed=3, outliers={"ratio": 0.2}).build(DOMAINS, labels)
    assert zero.sha256() == plain.sha256() != some.sha256()


def test_outlier_streams_are_seeded_and_saved(tmp_path):
    make = lambda seed: Stream(seed=seed, outliers={"ratio": 0.25}).build(DOMAINS, labels)  # noqa: E731
    a, b, c = make(1), make(1), make(2)
    assert a.sha256() == b.sha256() != c.sha256()
    loaded = StreamPlan.load(a.save(tmp_path))
    assert loaded.sha256() == a.sha256() and loaded.domains == a.domains
    assert Domain("contrast", 5, "embedded_ood") in loaded.domains


def test_too_few_outliers_and_bad_knobs_are_clear_errors():
    with pytest.raises(ValueError, match="needs 2333 outliers.*has 700"):
        Stream(outliers={"ratio": 0.7}).build(DOMAINS, labels)
    for bad, match in [
        ({"ratio": 1.0}, r"in \[0, 1\)"),
        ({"ratio": "a"}, "must be a number"),
        ({"ratio": 0.1, "mix": "zip"}, "valid: interleave, shuffle"),
        ({"rate": 0.1}, "unknown stream.outliers key"),
        ("yes", "must be a node"),
    ]:
        with pytest.raises(ValueError, match=match):
            Stream(outliers=bad)


# -- sources -----------------------------------------------------------------------------------


def test_embedded_ood_is_unseen_corrupted_and_labelled_minus_one(tiny_cfg):
    from hydra.utils import instantiate

    dataset = instantiate(tiny_cfg().dataset)
    source = build_source("embedded_ood", dataset)
    view = WithOutliers(dataset, source)
    ood = Domain("contrast", 5, "embedded_ood")
    assert (view.labels(ood) == -1).all() and len(view.labels(ood)) == 10_000
    idx = np.arange(8)
    images = view.images(ood, idx)
    assert images.shape == (8, 3, 32, 32) and images.dtype == torch.uint8
    assert not torch.equal(images, view.images(Domain("contrast", 5), idx))  # not test images
    assert not torch.equal(images, view.images(Domain("gaussian_noise", 5, "embedded_ood"), idx))
    assert torch.equal(images, build_source("embedded_ood", dataset).images(ood, idx))
    assert view.provenance()["outliers.source"] == "embedded_ood"
    with pytest.raises(ValueError, match="valid: embedded_ood, noise"):
        build_source("svhn", dataset)


def test_the_embedded_model_finds_the_unseen_shapes_less_familiar(tiny_cfg):
    """The outliers are outliers for the shipped model: on clean-ish data (brightness), its
    negative entropy separates them from the test images well above chance."""
    from hydra.utils import instantiate

    dataset = instantiate(tiny_cfg("dataset.corruptions=[brightness]").dataset)
    source = build_source("embedded_ood", dataset)
    model = load_embedded().eval()
    idx = np.arange(256)
    with torch.no_grad():
        score = [
            outlier_score(model(d.images(dom, idx).float() / 255).log_softmax(1)).numpy()
            for d, dom in [(dataset, Domain("brightness", 5)),
                           (source, Domain("brightness", 5, "embedded_ood"))]
        ]  # fmt: skip
    assert auroc(*score) > 75


def test_noise_is_stamps_gaussian_set():
    noise = GaussianNoise((8, 8), n=50)
    ref = np.array(np.clip(np.random.RandomState(1).randn(50, 8, 8, 3) + 0.5, 0, 1) * 255,
                   dtype=np.uint8)  # fmt: skip
    got = noise.images(Domain("fog", 5, "noise"), np.array([49, 0, 7])).numpy()
    assert (got == ref[[49, 0, 7]].transpose(0, 3, 1, 2)).all()
    assert (noise.labels(Domain("fog", 5, "noise")) == -1).all()
    assert GaussianNoise((224, 224)).n == 12_500 and GaussianNoise((32, 32)).n == 10_000


# -- accuracy, scores and summaries ------------------------------------------------------------


def test_summary_scores_the_test_samples_only():
    # domain 0: 4 test samples (3 right), 2 outliers; a wrong outlier never counts
    domain = np.zeros(6, dtype=np.int64)
    correct = np.array([1, 1, 1, 0, 0, 1], dtype=bool)  # the last "right" is an outlier
    outlier = np.array([0, 0, 0, 0, 1, 1], dtype=bool)
    score = np.array([0.9, 0.8, 0.7, 0.1, 0.2, 0.05])
    rows = [{"n": 4, "n_outliers": 2, "nonfinite": 0, "forwards": 6, "seconds": 1.0}]
    table = summarize(["fog"], [5], domain, correct, rows, [np.array([0])], {}, outlier, score)
    fog, every = table.iloc[0], table.iloc[-1]
    assert fog["n"] == 4 and fog["n_outliers"] == 2 and fog["error"] == 25.0
    assert fog["auroc"] == pytest.approx(100 * 7 / 8)  # 0.1 loses to 0.2 only
    assert fog["h_score"] == pytest.approx(h_score(75.0, 87.5))
    assert fog["forwards_per_sample"] == 1.0  # per stream sample, outliers included
    assert every["auroc"] == fog["auroc"]


def _run(tmp_path, name, *overrides):
    cfg = compose_run(*overrides)  # 2 corruptions x 256 test images
    return run(cfg, tmp_path / name)


def test_outliers_never_change_a_frozen_models_test_predictions(tmp_path):
    """method=source (norm=source) predicts every sample on its own: with outliers in the
    stream, the test samples' predictions and so the ID error are the same as without."""
    plain = _run(tmp_path, "plain", "method=source", "stream=dirichlet")
    mixed = _run(tmp_path, "mixed", "method=source", "stream=dirichlet",
                 "stream.outliers.ratio=0.2")  # fmt: skip
    assert list(mixed["n"]) == list(plain["n"]) and mixed["n_outliers"].iloc[-1] == 128
    assert np.allclose(mixed["error"], plain["error"])
    assert plain["auroc"].isna().all() and mixed["auroc"].between(0, 100).all()
    preds = pd.read_csv(tmp_path / "mixed" / "predictions.csv", keep_default_na=False)
    assert (preds["outliers"] == "embedded_ood").sum() == 128
    assert (preds.loc[preds["outliers"] == "embedded_ood", "label"] == -1).all()
    online = pd.read_csv(tmp_path / "mixed" / "online.csv")
    assert online["n"].sum() == 512 and online["n_outliers"].sum() == 128
    scores = preds["score"].to_numpy()
    assert (scores <= 0).all() and np.isfinite(scores).all()  # negative entropies


def test_a_run_with_ratio_zero_equals_the_run_without(tmp_path):
    a = _run(tmp_path, "a", "method=tent", "stream=dirichlet")
    b = _run(tmp_path, "b", "method=tent", "stream=dirichlet", "stream.outliers.ratio=0")
    volatile = ["seconds_per_sample", "peak_rss_mb", "cuda_max_mb", "message"]
    pd.testing.assert_frame_equal(a.drop(columns=volatile), b.drop(columns=volatile))
    online = [pd.read_csv(tmp_path / r / "online.csv").drop(columns="seconds") for r in "ab"]
    pd.testing.assert_frame_equal(*online)


def test_msp_score_and_a_bad_score_key(tmp_path):
    msp = _run(tmp_path, "msp", "method=bn", "stream.outliers.ratio=0.2", "outlier_score=msp")
    scores = pd.read_csv(tmp_path / "msp" / "predictions.csv")["score"]
    assert scores.between(0.1, 1.0).all() and msp["outlier_score"].iloc[0] == "msp"
    with pytest.raises(ValueError, match="outlier_score='max'; valid: entropy, msp"):
        _run(tmp_path, "bad", "outlier_score=max")


# -- STAMP -------------------------------------------------------------------------------------


def test_balanced_memory_evicts_from_the_most_counted_class():
    memory = BalancedMemory(capacity=4, num_classes=3)
    host = torch.Generator().manual_seed(0)
    items = torch.arange(4.0)[:, None]
    memory.add(items, [0, 0, 0, 1], host)
    memory.read()  # counts: 0.3, 0.1, 0
    assert memory.count == pytest.approx([0.3, 0.1, 0.0])
    memory.add(torch.tensor([[9.0]]), [2], host)  # full: the oldest of class 0 goes
    assert [len(q) for q in memory.queues] == [2, 1, 1] and len(memory) == 4
    assert memory.queues[0][0].item() == 1.0
    assert memory.read().flatten().tolist() == [1.0, 2.0, 3.0, 9.0]  # class order


def _stamp(**knobs) -> STAMP:
    model = BatchStatsNorm().apply(load_embedded())
    optim = lambda params: torch.optim.SGD(params, lr=0.1)  # noqa: E731
    return STAMP(model, context=MethodContext(10, 16, seed=0), optim=optim, **knobs)


def test_stamp_predicts_the_view_mean_and_scores_its_negative_entropy():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 32, 32)
    method = _stamp(n_views=0)  # no views: P is the softmax of the plain forward
    expected = method.model(x).softmax(1)  # the model before this batch's update
    log_p = method(x)
    assert torch.allclose(log_p.exp(), expected, atol=1e-5)
    p = log_p.exp()
    assert torch.allclose(method.outlier_score(log_p), (p * torch.log(p + 1e-5)).sum(1))


def test_stamp_fills_its_memory_with_reliable_agreeing_samples_and_adapts():
    method = _stamp(alpha=1.0)  # every sample's entropy is below ln C: agreement decides
    x = torch.rand(16, 3, 32, 32)
    before = [p.detach().clone() for p in method.trained]
    method(x)
    assert 0 < len(method.memory) <= 16 and method.updates == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, method.trained, strict=True))
    assert method.pop_costs()["forwards"] == 16 * (1 + 1 + 15) + 2 * len(method.memory)
    strict = _stamp(alpha=1e-6)  # nothing is reliable: no memory, no update
    strict(x)
    assert len(strict.memory) == 0 and strict.updates == 0
    method.reset()
    assert len(method.memory) == 0 and method.updates == 0


def test_stamp_learning_rate_follows_the_cosine_and_rises_after_t_max():
    method = _stamp(alpha=1.0, n_views=0, t_max=2)
    lrs = []
    for _ in range(4):
        method(torch.rand(16, 3, 32, 32))
        lrs.append(method.optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.05, 0.0, 0.05], abs=1e-9)


def test_stamp_trains_bn_affine_only_and_checks_knobs():
    method = _stamp()
    assert method.trained and all(n.endswith(("weight", "bias")) for n, _ in method.trainable())
    with pytest.raises(ValueError, match="method.augment='flip'; valid: cotta, crop_flip"):
        _stamp(augment="flip")
    crop = _stamp(augment="crop_flip", n_views=2)
    assert crop(torch.rand(4, 3, 32, 32)).shape == (4, 10)


def test_stamp_runs_with_outliers_end_to_end(tmp_path):
    summary = _run(tmp_path, "stamp", "method=stamp", "stream.outliers.ratio=0.2",
                   "method.n_views=2")  # fmt: skip
    assert summary["status"].iloc[-1] == "complete"
    assert summary["auroc"].iloc[-1] > 50


def test_compare_and_plot_show_the_outlier_metrics(tmp_path, capsys):
    from ttabench import compare, plot

    for method in ("source", "bn"):
        _run(tmp_path / "runs", method, f"method={method}", "stream.outliers.ratio=0.2")
    assert compare.main([str(tmp_path / "runs"), "--metric", "auroc", "--format", "csv"]) == 0
    cells = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    summaries = pd.concat(pd.read_csv(p) for p in (tmp_path / "runs").rglob("summary.csv"))
    every = summaries[summaries["domain"] == "all"].set_index("method")["auroc"]
    assert dict(zip(cells["method"], cells["mean"], strict=True)) == pytest.approx(
        every.to_dict(), abs=1e-3
    )
    assert compare.main([str(tmp_path / "runs"), "--metric", "h_score"]) == 0
    table = capsys.readouterr().out
    h = summaries[summaries["domain"] == "all"].set_index("method")["h_score"]
    best = h.idxmax()  # the highest H-score is marked, not the lowest
    assert table.startswith("H-score %") and any(
        line.startswith(best) and "*" in line for line in table.splitlines()
    )
    _run(tmp_path / "plain", "bn", "method=bn")  # the same stream without outliers
    both = [str(tmp_path / "runs"), str(tmp_path / "plain")]
    assert compare.main([*both, "--rows", "method,stream", "--format", "csv"]) == 0
    cells = pd.read_csv(pd.io.common.StringIO(capsys.readouterr().out))
    assert set(cells["stream"]) == {"iid (outliers.ratio=0.0)", "iid (outliers.ratio=0.2)"}
    out = tmp_path / "figs"
    args = [*both, "--kind", "corruption", "--metric", "auroc", "--out", str(out)]
    assert plot.main(args) == 0
    assert len(list(out.glob("corruption*.png"))) == 1  # the run without outliers is not drawn


def test_stamp_predict_changes_nothing_and_its_output_stays_finite():
    a, b = _stamp(alpha=1.0, n_views=2), _stamp(alpha=1.0, n_views=2)
    x1, x2 = torch.rand(16, 3, 32, 32), torch.rand(16, 3, 32, 32)
    a(x1), b(x1)
    a.predict(x2)  # a criterion's call: same views drawn afterwards, memory untouched
    assert torch.equal(a(x2), b(x2)) and len(a.memory) == len(b.memory)
    underflow = torch.tensor([[1.0, 0.0, 0.0]])  # a class whose mean probability is 0
    assert torch.isfinite(stamp_log(underflow)).all() and stamp_log(underflow).argmax() == 0


def test_a_model_for_other_classes_is_refused(tmp_path):
    summary = _run(tmp_path, "w", "dataset=embedded_8_2", "model=embedded")
    assert summary["status"].iloc[-1] == "failed"
    assert "outputs 10 classes but dataset embedded_8_2 has 8" in summary["message"].iloc[-1]


def test_interleave_spreads_the_outliers_and_shuffle_mixes_the_test_order():
    plain = Stream(seed=5).build(DOMAINS[:1], labels)
    inter = Stream(seed=5, outliers={"ratio": 0.2}).build(DOMAINS[:1], labels)
    where = np.flatnonzero(inter.outlier_mask()) / len(inter)
    assert 0.4 < where.mean() < 0.6 and where.min() < 0.1 and where.max() > 0.9  # not appended
    assert len(set(np.diff(np.flatnonzero(inter.outlier_mask())))) > 5  # not evenly spaced
    shuffled = Stream(seed=5, outliers={"ratio": 0.2, "mix": "shuffle"}).build(DOMAINS[:1], labels)
    order = shuffled.indices[~shuffled.outlier_mask()]
    assert sorted(order) == list(range(1000)) and not np.array_equal(order, plain.indices)
    outliers = shuffled.indices[shuffled.outlier_mask()]
    assert sorted(outliers) == list(range(250)) and not np.array_equal(outliers, np.arange(250))


def test_all_row_averages_the_domains_detection_as_stamp():
    domain = np.repeat([0, 1], 4)
    outlier = np.tile([False, False, True, True], 2)
    score = np.array([2.0, 3.0, 0.0, 1.0, 0.0, 3.0, 1.0, 2.0])  # AUROC 100 and 50
    correct = ~outlier
    rows = [{"n": 2, "n_outliers": 2, "nonfinite": 0}] * 2
    doms = [np.array([0]), np.array([1])]
    table = summarize(["a", "b"], [5, 5], domain, correct, rows, doms, {}, outlier, score)
    assert list(table["auroc"]) == [100.0, 50.0, 75.0]
    assert table["h_score"].iloc[-1] == pytest.approx((h_score(100, 100) + h_score(100, 50)) / 2)


def test_a_batch_of_outliers_only_has_no_label_statistics():
    plan = Stream(batch_size=1, seed=0, outliers={"ratio": 0.2}).build(DOMAINS[:1], labels)
    stats = batch_label_stats(plan.labels_of(labels), plan.batch_starts, ~plan.outlier_mask())
    assert np.isnan(stats["n_classes"][plan.outlier_mask()]).all()
    assert (stats["n_classes"][~plan.outlier_mask()] == 1).all()
    assert summarize_stream(plan, labels)["n_domains"] == 1.0  # outliers join their domain


def test_stamp_predicts_the_mean_over_its_views():
    method = _stamp(n_views=2)
    method._view = lambda x: x.flip(-1)  # a known view instead of a random one
    x = torch.rand(16, 3, 32, 32)
    with torch.no_grad():
        expected = (method.model(x).softmax(1) + 2 * method.model(x.flip(-1)).softmax(1)) / 3
    assert torch.allclose(method(x).exp(), expected, atol=1e-5)


def test_stamp_weights_memory_entropies_by_their_softmin():
    method = _stamp()
    data = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        h = -(method.model(data).softmax(1) * method.model(data).log_softmax(1)).sum(1)
        w = 64 * torch.exp(-h) / torch.exp(-h).sum()
        assert torch.allclose(method._weighted_entropy(data), (w * h).mean(), atol=1e-5)
