"""Property-based checks of every stream over random knobs, label arrays and batch sizes
(hypothesis): permutation orderings serve every index of every domain exactly once; the
single and continual schedules keep the configured domain order and never let a batch span two
domains; no batch is empty; the same knobs and seed give the same plan."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ttabench.domains import Domain
from ttabench.streams import Stream

PERMUTATIONS = ["iid", "dirichlet", "dirichlet_rotta", "sorted", "markov"]


@st.composite
def streams(draw):
    n_domains = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 60)) for _ in range(n_domains)]
    classes = draw(st.integers(1, 6))
    labels = {
        Domain(f"c{d}", 5): np.array(draw(st.lists(st.integers(0, classes - 1), min_size=n,
                                                   max_size=n)), dtype=np.int64)
        for d, n in enumerate(sizes)
    }  # fmt: skip
    knobs = {
        "domains": draw(st.sampled_from(["single", "continual", "mixed"])),
        "labels": draw(st.sampled_from(PERMUTATIONS)),
        "batch_size": draw(st.integers(1, 70)),
        "seed": draw(st.integers(0, 2**31 - 1)),
        "delta": draw(st.floats(0.01, 10.0)),
        "min_chunk": 0,
        "rho": draw(st.floats(0.0, 1.0)),
    }
    return labels, knobs


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams())
def test_every_stream_serves_each_index_once_in_non_empty_batches(case):
    labels, knobs = case
    domains = list(labels)
    plan = Stream(**knobs).build(domains, labels.__getitem__)
    sizes = np.diff(plan.batch_starts)
    assert len(sizes) == plan.n_batches and (sizes > 0).all()
    assert plan.batch_starts[-1] == len(plan) == sum(len(y) for y in labels.values())
    for d, domain in enumerate(domains):
        served = np.sort(plan.indices[plan.domain_ids == d])
        assert np.array_equal(served, np.arange(len(labels[domain])))
    if knobs["domains"] in ("single", "continual"):
        assert (np.diff(plan.domain_ids) >= 0).all()  # domains in the configured order
        for b in range(plan.n_batches):
            ids = plan.domain_ids[plan.batch_starts[b] : plan.batch_starts[b + 1]]
            assert (ids == ids[0]).all()
    again = Stream(**knobs).build(domains, labels.__getitem__)
    assert again.sha256() == plan.sha256()
