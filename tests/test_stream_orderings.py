"""How correlated each label ordering is, and how its knob moves it (specs/streams.md)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from ttabench.domains import Domain
from ttabench.streams import Stream, batch_label_stats, label_stats, mean_run_length, summarize

DOMAIN = [Domain("gaussian_noise", 5)]


def balanced(n_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    y = np.repeat(np.arange(n_classes, dtype=np.int64), per_class)
    np.random.default_rng(seed).shuffle(y)
    return y


def mean_stats(y: np.ndarray, seeds: range, **knobs) -> dict[str, float]:
    """Statistics of one-domain streams over ``y``, averaged over stream seeds."""
    runs = [
        summarize(Stream(seed=s, **knobs).build(DOMAIN, lambda d: y), lambda d: y) for s in seeds
    ]
    return {k: float(np.mean([r[k] for r in runs])) for k in runs[0]}


def test_label_stats_follow_their_definitions():
    got = label_stats(np.array([3, 3, 7, 9]))
    assert got["n_classes"] == 3 and got["majority_frac"] == 0.5
    assert got["label_entropy"] == pytest.approx(-(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)))
    assert label_stats(np.array([5] * 8))["label_entropy"] == 0.0
    assert mean_run_length(np.array([1, 1, 2, 2, 2, 1])) == 2.0


def test_batch_stats_equal_per_batch_label_stats():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 7, size=500)
    starts = np.r_[0, np.sort(rng.choice(np.arange(1, 500), 40, replace=False)), 500]
    got = batch_label_stats(y, starts)
    for b in range(len(starts) - 1):
        want = label_stats(y[starts[b] : starts[b + 1]])
        for key, value in want.items():
            assert got[key][b] == pytest.approx(value), (key, b)


@pytest.mark.parametrize("ordering", ["dirichlet", "dirichlet_rotta"])
def test_distinct_classes_fall_with_delta_and_sorted_is_the_limit(ordering):
    y = balanced(100, 100)
    seeds = range(3)
    # min_chunk 0: at tiny delta NOTE's minimum chunk size can essentially never be met.
    # (No comparison with i.i.d.: at delta >> 1 both samplers stratify, spreading every class
    # evenly over the chunks, and batches hold *more* classes than i.i.d. ones.)
    classes = [
        mean_stats(y, seeds, labels=ordering, delta=d, min_chunk=0)["n_classes"]
        for d in [1.0, 0.1, 0.01, 1e-6]
    ]
    sorted_ = mean_stats(y, seeds, labels="sorted")
    assert all(a > b for a, b in zip(classes, classes[1:], strict=False)), classes
    assert classes[-1] >= sorted_["n_classes"] - 0.05
    # At delta -> 0 each class lands whole in one chunk: the stream is ``sorted``.
    assert classes[-1] == pytest.approx(sorted_["n_classes"], abs=0.1)


def test_sorted_is_one_contiguous_block_per_class_in_random_order():
    y = balanced(10, 37)
    orders = []
    for seed in range(3):
        plan = Stream(labels="sorted", seed=seed).build(DOMAIN, lambda d: y)
        seq = plan.labels_of(lambda d: y)
        assert mean_run_length(seq) == 37  # exactly 10 runs, one per class
        orders.append(tuple(dict.fromkeys(seq.tolist())))
    assert len(set(orders)) == 3


def test_imbalanced_with_ratio_one_behaves_like_iid():
    y = balanced(100, 100)
    seeds = range(5)
    iid = mean_stats(y, seeds, labels="iid")
    flat = mean_stats(y, seeds, labels="imbalanced", imbalance_ratio=1.0)
    skewed = mean_stats(y, seeds, labels="imbalanced", imbalance_ratio=1000.0)
    # Seed-to-seed sd of the mean classes per batch is ~0.19 (157 batches), so the 5-seed means
    # differ by sd ~0.12; with-replacement draws change the expectation by < 0.05. 0.6 = 5 sd.
    assert flat["n_classes"] == pytest.approx(iid["n_classes"], abs=0.6)
    assert flat["majority_frac"] == pytest.approx(iid["majority_frac"], abs=0.01)
    assert flat["run_length"] == pytest.approx(iid["run_length"], abs=0.02)
    assert skewed["n_classes"] < iid["n_classes"] / 3  # the test can tell them apart
    # IR = 1: every class equally likely at every step (chi-square on 10,000 draws).
    plan = Stream(labels="imbalanced", imbalance_ratio=1.0).build(DOMAIN, lambda d: y)
    counts = np.bincount(plan.labels_of(lambda d: y), minlength=100)
    assert sps.chisquare(counts).pvalue > 1e-3


def test_imbalanced_stages_favour_one_class_each_with_probability_ir_m():
    y = balanced(10, 100)
    ratio, n_classes, length = 1000.0, 10, 5000
    plan = Stream(labels="imbalanced", imbalance_ratio=ratio, n_samples=length).build(
        DOMAIN, lambda d: y
    )
    seq = plan.labels_of(lambda d: y)
    assert len(seq) == length and len(np.unique(plan.indices)) < len(y)  # with replacement
    stages = seq.reshape(n_classes, length // n_classes)
    favoured = [np.bincount(s, minlength=n_classes).argmax() for s in stages]
    assert sorted(favoured) == list(range(n_classes))  # a permutation of the classes
    share = np.mean([np.mean(s == f) for s, f in zip(stages, favoured, strict=True)])
    # q = IR * m = 1000 / 1009 = 0.991; sd of the mean share over 5000 draws is ~0.0013.
    assert share == pytest.approx(ratio / (ratio + n_classes - 1), abs=0.006)


def test_markov_spans_iid_to_sorted():
    n_classes, per_class = 20, 50
    y = balanced(n_classes, per_class)
    seeds = range(6)
    iid = mean_stats(y, seeds, labels="iid")
    at_uniform = mean_stats(y, seeds, labels="markov", rho=1 / n_classes)
    # rho = 1/K is exactly a uniform permutation. The 6-seed means of classes per batch have sd
    # ~0.1 and of run length ~0.003, so these tolerances are > 4 sd of their difference.
    assert at_uniform["n_classes"] == pytest.approx(iid["n_classes"], abs=0.5)
    assert at_uniform["run_length"] == pytest.approx(iid["run_length"], abs=0.02)
    rhos = [1 / n_classes, 0.5, 0.9, 0.99, 1.0]
    curve = [mean_stats(y, seeds, labels="markov", rho=r) for r in rhos]
    runs = [c["run_length"] for c in curve]
    classes = [c["n_classes"] for c in curve]
    assert all(a < b for a, b in zip(runs, runs[1:], strict=False)), runs
    assert all(a > b for a, b in zip(classes, classes[1:], strict=False)), classes
    # rho = 1 leaves a class only when it is exhausted: exactly ``sorted``.
    assert runs[-1] == per_class
    # With balanced counts the chain stays with probability rho: runs ~ 1 / (1 - rho) = 2.
    assert runs[1] == pytest.approx(2.0, rel=0.1)
