"""Defining properties of the stream samplers (specs/streams.md, issue #3), on synthetic labels."""

from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import pytest

from ttabench.domains import Domain
from ttabench.streams import Stream, StreamPlan, summarize
from ttabench.streams import orderings as ordering_registry
from ttabench.streams import schedules as schedule_registry

CORRUPTIONS = ["motion_blur", "snow", "fog"]  # deliberately not alphabetical / canonical
DOMAINS = [Domain(c, 5) for c in CORRUPTIONS]
PERMUTATION_ORDERINGS = [
    n
    for n in ordering_registry.names()
    if not ordering_registry.draws_with_replacement(ordering_registry.get(n))
]


def balanced(n_classes: int, per_class: int, seed: int = 0) -> np.ndarray:
    """Balanced labels in a shuffled dataset order, like a real test set."""
    y = np.repeat(np.arange(n_classes, dtype=np.int64), per_class)
    np.random.default_rng(seed).shuffle(y)
    return y


class SameLabels:
    """``labels(domain)``: identical labels for every domain, as in CIFAR-10-C; records calls."""

    def __init__(self, y: np.ndarray) -> None:
        self.y, self.calls = y, []

    def __call__(self, domain: Domain) -> np.ndarray:
        self.calls.append(domain)
        return self.y


def pairs(plan: StreamPlan) -> list[tuple[Domain, int]]:
    return [(plan.domains[d], int(i)) for d, i in zip(plan.domain_ids, plan.indices, strict=True)]


def batch_domains(plan: StreamPlan) -> list[list[Domain]]:
    return [[plan.domains[d] for d in np.unique(b.domain_ids)] for b in plan.batches()]


# ---- permutation orderings x schedules --------------------------------------------------------


@pytest.mark.parametrize("schedule", schedule_registry.names())
@pytest.mark.parametrize("ordering", PERMUTATION_ORDERINGS)
def test_permutation_streams_visit_every_sample_once_per_visit(ordering, schedule):
    y = balanced(10, 30)
    plan = Stream(domains=schedule, labels=ordering, batch_size=16).build(DOMAINS, SameLabels(y))
    counts = Counter(pairs(plan))
    if schedule == "gradual":  # severities 1..5..1: 1-4 visited twice, 5 once
        expected = {Domain(c, s): 2 - (s == 5) for c in CORRUPTIONS for s in range(1, 6)}
    else:
        expected = dict.fromkeys(DOMAINS, 1)
    assert set(plan.domains) == set(expected)
    for domain, times in expected.items():
        assert all(counts[(domain, i)] == times for i in range(len(y)))
    assert len(plan) == sum(expected.values()) * len(y)


@pytest.mark.parametrize("schedule", schedule_registry.names())
def test_with_replacement_orderings_compose_with_every_schedule(schedule):
    y = balanced(10, 30)
    stream = Stream(domains=schedule, labels="imbalanced", imbalance_ratio=10.0, n_samples=500)
    plan = stream.build(DOMAINS, SameLabels(y))
    visits = 1 if schedule == "mixed" else 27 if schedule == "gradual" else len(DOMAINS)
    per_visit = 500 * (len(DOMAINS) if schedule == "mixed" else 1)
    assert len(plan) == visits * per_visit  # n_samples draws per pooled domain
    assert plan.indices.min() >= 0 and plan.indices.max() < len(y)
    assert set(plan.domains) == set(Counter(plan.domains[d] for d in plan.domain_ids))


@pytest.mark.parametrize("ordering", ordering_registry.names())
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_batches_are_cut_within_visits_and_keep_the_last_partial_batch(ordering, batch_size):
    y = balanced(10, 30)  # 300 samples: 300 = 42 * 7 + 6 = 4 * 64 + 44
    plan = Stream(labels=ordering, batch_size=batch_size).build(DOMAINS, SameLabels(y))
    sizes = np.diff(plan.batch_starts)
    per_domain = -(-len(y) // batch_size)
    assert plan.n_batches == len(DOMAINS) * per_domain
    assert all(len(ds) == 1 for ds in batch_domains(plan))  # never spans two visits
    last = len(y) - (per_domain - 1) * batch_size
    assert sizes.tolist() == ([batch_size] * (per_domain - 1) + [last]) * len(DOMAINS)
    assert sum(len(b.indices) for b in plan.batches()) == len(plan) == len(DOMAINS) * len(y)


@pytest.mark.parametrize(
    ("schedule", "n_resets"), [("single", 3), ("continual", 1), ("mixed", 1), ("gradual", 1)]
)
def test_resets_follow_the_schedule(schedule, n_resets):
    plan = Stream(domains=schedule, batch_size=32).build(DOMAINS, SameLabels(balanced(10, 30)))
    assert plan.resets[0] and plan.resets.sum() == n_resets
    if schedule == "single":  # a reset exactly where the domain changes
        first_domain = plan.domain_ids[plan.batch_starts[:-1]]
        changes = np.flatnonzero(np.diff(first_domain)) + 1
        assert np.flatnonzero(plan.resets).tolist() == [0, *changes.tolist()]


@pytest.mark.parametrize("schedule", ["single", "continual"])
def test_domains_run_in_the_configured_order(schedule):
    order = [Domain(c, 5) for c in ["zoom_blur", "contrast", "gaussian_noise", "brightness"]]
    plan = Stream(domains=schedule, labels="sorted").build(order, SameLabels(balanced(10, 20)))
    seen = [plan.domains[d] for d in plan.domain_ids]
    assert list(dict.fromkeys(seen)) == order
    assert sum(1 for a, b in zip(seen, seen[1:], strict=False) if a != b) == len(order) - 1


@pytest.mark.parametrize(
    "ordering", ["dirichlet", "dirichlet_rotta", "sorted", "markov", "imbalanced"]
)
def test_mixed_pools_all_domains_and_composes_with_any_ordering(ordering):
    y = balanced(10, 100)
    labels = SameLabels(y)
    knobs = {"imbalance_ratio": 1000.0, "rho": 0.99}
    mixed = Stream(domains="mixed", labels=ordering, **knobs).build(DOMAINS, labels)
    iid = Stream(domains="mixed", labels="iid").build(DOMAINS, labels)
    assert len(mixed) == len(iid) == len(DOMAINS) * len(y)
    assert mixed.resets.tolist() == [True] + [False] * (mixed.n_batches - 1)
    assert set(mixed.domains) == set(DOMAINS)
    stats, iid_stats = summarize(mixed, labels), summarize(iid, labels)
    # Pooled uniformly over domains: almost every batch of 64 holds all three domains.
    assert stats["n_domains"] > 2.5 and iid_stats["n_domains"] > 2.5
    # The ordering is applied over the pool, so the label correlation survives the mixing
    # (i.i.d. batches of 64 hold all 10 classes; these orderings give ~1-3).
    assert iid_stats["n_classes"] > 9.5 and stats["n_classes"] < 5


def test_gradual_follows_severities_one_to_five_and_back():
    labels = SameLabels(balanced(10, 20))
    plan = Stream(domains="gradual", labels="iid").build(
        [Domain("snow", 5), Domain("fog", 5)], labels
    )
    visits = [plan.domains[d] for d in plan.domain_ids[plan.batch_starts[:-1]]]
    ramp = [v for i, v in enumerate(visits) if i == 0 or v != visits[i - 1]]
    expected = [Domain(c, s) for c in ["snow", "fog"] for s in [1, 2, 3, 4, 5, 4, 3, 2, 1]]
    assert ramp == expected
    assert {d.severity for d in labels.calls} == {1, 2, 3, 4, 5}


def test_gradual_with_several_configured_severities_uses_them():
    domains = [Domain("snow", 3), Domain("snow", 5), Domain("fog", 3), Domain("fog", 5)]
    plan = Stream(domains="gradual").build(domains, SameLabels(balanced(5, 10)))
    assert plan.domains == domains


# ---- seeding ----------------------------------------------------------------------------------


@pytest.mark.parametrize("ordering", ordering_registry.names())
def test_same_seed_reproduces_and_other_seed_differs(ordering):
    y = balanced(10, 50)
    build = lambda seed: Stream(domains="continual", labels=ordering, seed=seed).build(  # noqa: E731
        DOMAINS, SameLabels(y)
    )
    np.random.seed(1)  # the global RNG must play no part
    a = build(3)
    np.random.seed(2)
    b = build(3)
    assert a.sha256() == b.sha256()
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.domain_ids, b.domain_ids)
    assert build(4).sha256() != a.sha256()


@pytest.mark.parametrize("ordering", ["iid", "dirichlet", "dirichlet_rotta", "sorted", "markov"])
def test_domains_with_identical_labels_get_different_class_sequences(ordering):
    # The pitfall of reseeding a global RNG per domain: every CIFAR-10-C corruption (same labels)
    # would show the identical class sequence.
    y = balanced(10, 200)
    plan = Stream(domains="continual", labels=ordering).build(DOMAINS, SameLabels(y))
    seqs = [y[plan.indices[plan.domain_ids == d]] for d in range(len(DOMAINS))]
    assert not np.array_equal(seqs[0], seqs[1]) and not np.array_equal(seqs[1], seqs[2])


@pytest.mark.parametrize("ordering", ["iid", "dirichlet", "imbalanced"])
def test_a_domain_gets_the_same_order_whatever_its_position(ordering):
    y = balanced(10, 50)
    alone = Stream(domains="single", labels=ordering).build([DOMAINS[2]], SameLabels(y))
    third = Stream(domains="continual", labels=ordering).build(DOMAINS, SameLabels(y))
    fog = third.domains.index(DOMAINS[2])
    assert np.array_equal(alone.indices, third.indices[third.domain_ids == fog])


def test_repeated_gradual_visits_differ():
    y = balanced(10, 50)
    plan = Stream(domains="gradual", labels="dirichlet").build([Domain("snow", 5)], SameLabels(y))
    snow1 = plan.indices[plan.domain_ids == plan.domains.index(Domain("snow", 1))]
    first, second = snow1[: len(y)], snow1[len(y) :]
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


def test_n_samples_subsamples_each_domain_identically_in_every_schedule():
    y = balanced(10, 100)
    single = Stream(domains="single", n_samples=300).build(DOMAINS, SameLabels(y))
    mixed = Stream(domains="mixed", n_samples=300).build(DOMAINS, SameLabels(y))
    for d in DOMAINS:
        a = np.sort(single.indices[single.domain_ids == single.domains.index(d)])
        b = np.sort(mixed.indices[mixed.domain_ids == mixed.domains.index(d)])
        assert len(a) == 300 and len(np.unique(a)) == 300 and np.array_equal(a, b)
    # Domains of one test set (same labels) share the subset, so their errors are comparable;
    # a domain with other labels gets another one.
    sub = [set(single.indices[single.domain_ids == i].tolist()) for i in range(3)]
    assert sub[0] == sub[1] == sub[2]
    other = np.roll(y, 1)
    mixed_labels = Stream(domains="single", n_samples=300).build(
        DOMAINS[:2], lambda d: other if d == DOMAINS[1] else y
    )
    a, b = (set(mixed_labels.indices[mixed_labels.domain_ids == i].tolist()) for i in range(2))
    assert a != b


# ---- the plan object --------------------------------------------------------------------------


def test_plan_saves_and_loads_with_identical_sha(tmp_path):
    y = balanced(10, 50)
    plan = Stream(domains="gradual", labels="dirichlet", batch_size=10).build(
        DOMAINS[:2], SameLabels(y)
    )
    path = plan.save(tmp_path / "run")
    loaded = StreamPlan.load(tmp_path / "run")
    assert path.exists() and loaded.sha256() == plan.sha256()
    assert loaded.domains == plan.domains
    for name in ["domain_ids", "indices", "batch_starts", "resets"]:
        assert np.array_equal(getattr(loaded, name), getattr(plan, name))


def test_sha_depends_on_every_part_of_the_plan():
    plan = Stream(batch_size=8).build(DOMAINS, SameLabels(balanced(4, 10)))
    fields = dict(
        domains=plan.domains,
        domain_ids=plan.domain_ids,
        indices=plan.indices,
        batch_starts=plan.batch_starts,
        resets=plan.resets,
    )
    changed = {
        "domains": [Domain("snow", 4), *plan.domains[1:]],
        "domain_ids": np.where(plan.domain_ids == 0, 1, np.where(plan.domain_ids == 1, 0, 2)),
        "indices": np.roll(plan.indices, 1),
        "batch_starts": np.r_[0, 4, plan.batch_starts[1:]],
        "resets": np.r_[plan.resets[:-1], not plan.resets[-1]],
    }
    for name, value in changed.items():
        other = fields | {name: value}
        if name == "batch_starts":
            other["resets"] = np.r_[plan.resets[:1], False, plan.resets[1:]]
        assert StreamPlan(**other).sha256() != plan.sha256(), name


def test_batches_and_labels_of_agree_with_the_arrays():
    y = balanced(10, 20)
    plan = Stream(domains="continual", batch_size=9).build(DOMAINS, SameLabels(y))
    got = list(plan.batches())
    assert [b.number for b in got] == list(range(plan.n_batches))
    assert np.array_equal(np.concatenate([b.indices for b in got]), plan.indices)
    assert [b.reset for b in got] == plan.resets.tolist()
    assert np.array_equal(plan.labels_of(SameLabels(y)), y[plan.indices])
    with pytest.raises(ValueError):
        plan.indices[0] = 1  # immutable


# ---- knob validation --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "message"),
    [
        ({"delta": 0.0}, "delta"),
        ({"delta": -1.0}, "delta"),
        ({"delta": float("nan")}, "delta"),
        ({"labels": "shuffled"}, "dirichlet_rotta"),  # the message lists the valid names
        ({"domains": "reset_each_shift"}, "continual"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"batch_size": True}, "batch_size"),
        ({"seed": -1}, "seed"),
        ({"min_chunk": -1}, "min_chunk"),
        ({"rho": 1.5}, "rho"),
        ({"imbalance_ratio": 0.5}, "imbalance_ratio"),
        ({"n_samples": 0}, "n_samples"),
        ({"shuffle_within_class": "yes"}, "shuffle_within_class"),
        ({"gamma": 0.1}, "gamma"),  # unknown knob (use delta)
    ],
)
def test_bad_knobs_are_clear_errors(knobs, message):
    with pytest.raises(ValueError, match=message):
        Stream(**knobs)


def test_impossible_min_chunk_is_a_clear_error():
    # 10 chunks of >= 10 samples need 100 samples; the domain has 50.
    stream = Stream(labels="dirichlet", min_chunk=10)
    with pytest.raises(ValueError, match="min_chunk"):
        stream.build(DOMAINS, SameLabels(balanced(10, 5)))
    # Possible in principle but never met within max_tries: also an error, not a hang.
    hard = Stream(labels="dirichlet", delta=1e-3, min_chunk=10, max_tries=3)
    with pytest.raises(ValueError, match="max_tries"):
        hard.build(DOMAINS[:1], SameLabels(balanced(100, 100)))


def test_bad_labels_or_sizes_are_clear_errors():
    with pytest.raises(ValueError, match="n_samples"):
        Stream(n_samples=1000).build(DOMAINS, SameLabels(balanced(10, 10)))
    with pytest.raises(ValueError, match="integer"):
        Stream().build(DOMAINS, SameLabels(np.zeros(10)))
    with pytest.raises(ValueError, match="non-empty"):
        Stream().build(DOMAINS, SameLabels(np.zeros(0, dtype=np.int64)))
    with pytest.raises(ValueError, match="at least one domain"):
        Stream().build([], SameLabels(balanced(2, 2)))


# ---- pluggability -----------------------------------------------------------------------------


def test_a_new_ordering_is_one_file(tmp_path, monkeypatch):
    (tmp_path / "reverse_blocks.py").write_text(
        "import numpy as np\n\n\n"
        "def order(labels, rng, block: int = 1):\n"
        "    idx = np.arange(len(labels))[::-1]\n"
        "    return np.concatenate([rng.permutation(c) for c in np.array_split(idx, block)])\n"
    )
    monkeypatch.setattr(ordering_registry, "__path__", [*ordering_registry.__path__, str(tmp_path)])
    monkeypatch.delitem(sys.modules, f"{ordering_registry.__name__}.reverse_blocks", raising=False)
    assert "reverse_blocks" in ordering_registry.names()
    plan = Stream(labels="reverse_blocks", block=5).build(DOMAINS[:1], SameLabels(balanced(5, 10)))
    assert sorted(plan.indices) == list(range(50))
    with pytest.raises(ValueError, match="unknown stream knob"):
        Stream(labels="reverse_blocks", blocks=5)
