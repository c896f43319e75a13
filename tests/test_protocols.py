"""Evaluation protocols (``protocol=...``): what defines each, on real methods and streams.

- ``snapshot``/``restore`` bring back everything a method learned (the oracle relies on it);
- ``oracle_selection`` never scores worse than the last state it tried, on the same batch;
- ``episodic`` equals a freshly built method per batch;
- ``compute_aware`` with a cost ratio of 1 is the online protocol, and skips
  ``1 - 1 / ceil(C * eta)`` of the batches for a constant cost C.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pandas as pd
import pytest
import torch

from ttabench.config import config_dir
from ttabench.methods.base import TTAMethod
from ttabench.protocols import Episodic, Online
from ttabench.protocols.compute_aware import ComputeAware
from ttabench.protocols.oracle_selection import OracleSelection
from ttabench.results import VOLATILE_COLUMNS
from ttabench.run import run

from .conftest import compose_run
from .test_methods import make_method, shifted_batch

METHODS = sorted(p.stem for p in (config_dir() / "method").glob("*.yaml"))


def batches(n: int = 4, size: int = 32) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    shifted = shifted_batch(size)
    return [(shifted + 0.1 * torch.rand(shifted.shape, generator=g)).clamp(0, 1) for _ in range(n)]


@pytest.mark.parametrize("name", METHODS)
def test_restore_brings_back_everything_the_method_learned(name):
    method = make_method(f"method={name}")
    xs = batches(3)
    method(xs[0])
    state = method.snapshot()
    first = [method(x) for x in xs[1:]]
    torch.rand(7)  # the global generator moves: a method must not draw from it
    method.restore(state)
    again = [method(x) for x in xs[1:]]
    for a, b in zip(first, again, strict=True):
        assert torch.allclose(a, b, atol=1e-6), f"{name}: restore missed some learned state"
    method.restore(state)  # a snapshot can be restored twice
    assert torch.allclose(method(xs[1]), first[0], atol=1e-6)


@pytest.mark.parametrize(
    ("name", "norm"), [(name, None) for name in METHODS] + [("lame", "ema"), ("lame", "rbn")]
)
def test_every_method_predicts_without_adapting_and_adapts_again(name, norm):
    method = make_method(f"method={name}", *([f"norm={norm}"] if norm else []))
    x = shifted_batch()
    method(x)
    before = {k: v.clone() for k, v in method.state_dict().items()}
    logits = method.predict(x)
    assert logits.shape == (32, 10)
    assert all(torch.equal(before[k], v) for k, v in method.state_dict().items()), "predict moved"
    method.adapt_again(x)  # every method takes another step (or, without steps, none)
    log_p = method.log_probabilities(method.predict(x))
    assert torch.allclose(log_p.exp().sum(1), torch.ones(32), atol=1e-4)


def _correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    return int((logits.argmax(1) == y).sum())


def test_oracle_keeps_the_best_adapted_state_and_never_scores_below_the_last_one():
    xs, y = batches(4), torch.arange(32) % 10
    oracle, method = OracleSelection(n_steps=4), make_method("method=tent", "norm=ema")
    twin = make_method("method=tent", "norm=ema")
    for x in xs:
        twin.restore(method.snapshot())  # the same state, stepped by hand
        twin(x)
        scores, states = [], []
        for step in range(4):
            if step:
                twin.adapt_again(x)
            states.append(twin.snapshot())
            logits = twin.predict(x)
            loss = torch.nn.functional.cross_entropy(logits, y).item()
            scores.append((_correct(logits, y), -loss))
        answer = oracle(method, x, y)
        best = max(range(4), key=lambda k: (scores[k], -k))
        assert answer.selected_step == best + 1
        assert _correct(answer.logits, y) >= scores[-1][0], "worse than the last state"
        twin.restore(states[best])
        assert torch.allclose(answer.logits, method.predict(x), atol=1e-6), "not the kept state"
        assert torch.allclose(method.predict(x), twin.predict(x), atol=1e-6)


def test_oracle_with_one_step_scores_the_state_after_the_online_step():
    x, y = shifted_batch(), torch.arange(32) % 10
    method, online = make_method("method=tent"), make_method("method=tent")
    answer = OracleSelection(n_steps=1)(method, x, y)
    online(x)
    assert torch.allclose(answer.logits, online.predict(x), atol=1e-6)


@pytest.mark.parametrize("name", ["rotta", "note"])
def test_oracle_stores_a_batch_once_in_a_memory_method(name):
    method = make_method(f"method={name}", "stream.batch_size=64")
    x, y = torch.cat([shifted_batch(), shifted_batch()]), torch.arange(64) % 10
    OracleSelection(n_steps=3)(method, x, y)
    assert method.seen == 64, "the batch went into the memory once"
    backwards = method.pop_costs()["backwards"]
    assert backwards == 3 * len(method.memory) > 0, "one update per step, on the memory batch"


def test_oracle_needs_labels_and_is_marked():
    assert OracleSelection.uses_labels and not Online.uses_labels
    with pytest.raises(ValueError, match="needs the batch's labels"):
        OracleSelection(n_steps=2)(make_method("method=tent"), shifted_batch(), None)
    with pytest.raises(ValueError, match="protocol.n_steps must be >= 1"):
        OracleSelection(n_steps=0)


@pytest.mark.parametrize("name", ["deyo", "rotta", "cotta"])
def test_episodic_equals_a_fresh_method_per_batch(name):
    xs = batches(3)
    method, episodic = make_method(f"method={name}"), Episodic()
    for x in xs:
        fresh = make_method(f"method={name}")
        torch.rand(3)  # the global generator moves between the two
        assert torch.allclose(episodic(method, x, None).logits, fresh(x), atol=1e-6)


class Stub(TTAMethod):
    """Costs ``passes`` forwards per sample per call: a synthetic cost."""

    def __init__(self, passes: int) -> None:
        self.passes = passes
        super().__init__(torch.nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += self.passes * len(x)
        return x

    def plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        return -x


@pytest.mark.parametrize(
    ("cost", "eta"), [(1.0, 1.0), (2.0, 1.0), (2.5, 1.0), (3.0, 0.5), (0.5, 1.0)]
)
def test_compute_aware_skips_what_a_fixed_cost_predicts(cost, eta):
    protocol, method = ComputeAware(cost=cost, eta=eta), Stub(1)
    protocol.start(method)
    adapted = [protocol(method, torch.ones(2, 3), None).adapted for _ in range(60)]
    period = max(1, math.ceil(cost * eta))
    assert adapted == [i % period == 0 for i in range(60)]
    assert 1 - np.mean(adapted) == pytest.approx(1 - 1 / period)


class Sleeper(TTAMethod):
    """Its call takes ``factor`` times as long as its prediction: a measured cost (factors
    away from whole numbers, so that sleep's jitter cannot move ceil(C))."""

    def __init__(self, factor: float) -> None:
        self.factor = factor
        super().__init__(torch.nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05 * self.factor)
        return x

    def plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.05)
        return x


@pytest.mark.parametrize(("factor", "period"), [(0.8, 1), (2.5, 3)])
def test_compute_aware_measures_the_cost_against_a_prediction(factor, period):
    protocol, method = ComputeAware(), Sleeper(factor)  # cost: measured (the default)
    protocol.start(method)
    answers = [protocol(method, torch.ones(2, 3), None) for _ in range(9)]
    assert [a.adapted for a in answers] == [i % period == 0 for i in range(9)]
    measured = [a.relative_cost for a in answers if a.adapted]
    assert all(factor * 0.6 < c < factor * 1.4 for c in measured)
    assert all(a.overhead_seconds >= 0.05 for a in answers if a.adapted)


def test_measured_cost_within_ten_percent_above_a_whole_number_counts_as_it():
    from ttabench.protocols.compute_aware import _snap

    assert [_snap(c) for c in (1.06, 2.05, 0.9, 2.5, 3.2)] == [1.0, 2.0, 0.9, 2.5, 3.2]


def test_compute_aware_restarts_its_clock_where_the_method_is_reset():
    protocol, method = ComputeAware(cost=3), Stub(1)
    protocol.start(method)
    first = [protocol(method, torch.ones(2, 3), None).adapted for _ in range(2)]
    protocol.reset()
    assert first == [True, False] and protocol(method, torch.ones(2, 3), None).adapted


def test_compute_aware_counts_passes_per_batch():
    protocol, method = ComputeAware(cost="passes"), Stub(3)
    protocol.start(method)
    answers = [protocol(method, torch.ones(4, 3), None) for _ in range(9)]
    assert [a.adapted for a in answers] == [True, False, False] * 3
    assert answers[0].relative_cost == 3.0
    assert torch.equal(answers[1].logits, -torch.ones(4, 3)), "skipped: the current state answers"


def test_compute_aware_rejects_bad_knobs():
    with pytest.raises(ValueError, match="protocol.cost must be measured, passes or a number"):
        ComputeAware(cost="fast")
    with pytest.raises(ValueError, match="protocol.cost must be measured, passes or a number"):
        ComputeAware(cost=float("inf"))
    with pytest.raises(ValueError, match=r"protocol.eta must be in \[0.0, 1000000.0\]"):
        ComputeAware(eta=float("inf"))
    assert ComputeAware(eta=0).eta == 0  # official: eta = 0 never skips
    with pytest.raises(
        ValueError, match="protocol.skipped='old' is unknown; valid: latest, source"
    ):
        ComputeAware(skipped="old")


def expected_adapted(online: pd.DataFrame, period: int) -> list[int]:
    """Every ``period``-th batch, counted from each domain's first (a reset per domain)."""
    first = online["domain"].ne(online["domain"].shift()).cumsum()
    position = online.groupby(first).cumcount()
    return [int(p % period == 0) for p in position]


def _run(tmp_path, name: str, *overrides: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = tmp_path / name
    run(compose_run("method=tent", *overrides), out)  # a method=... override wins
    return pd.read_csv(out / "online.csv"), pd.read_csv(out / "summary.csv")


@pytest.mark.parametrize("name", METHODS)
def test_every_method_runs_under_compute_aware_and_logs_consistency(name, tmp_path):
    overrides = ["protocol=compute_aware", "protocol.cost=2", "consistency=true"]
    online, summary = _run(tmp_path, name, f"method={name}", *overrides)
    assert (summary["status"] == "complete").all()
    assert list(online["adapted"]) == expected_adapted(online, 2)
    assert online["consistency"].notna().all() and online["entropy"].notna().all()


def test_compute_aware_at_cost_one_is_the_online_protocol(tmp_path):
    online, s_online = _run(tmp_path, "online")
    aware, s_aware = _run(tmp_path, "aware", "protocol=compute_aware", "protocol.cost=1")
    keep = [c for c in online if c not in (*VOLATILE_COLUMNS, "relative_cost")]
    pd.testing.assert_frame_equal(online[keep], aware[keep])
    assert s_aware["skipped_fraction"].eq(0).all() and s_aware["protocol"].eq("compute_aware").all()
    assert s_online["protocol"].eq("online").all() and not s_online["uses_labels"].any()


def test_compute_aware_run_records_the_skipped_fraction(tmp_path):
    online, summary = _run(tmp_path, "aware", "protocol=compute_aware", "protocol.cost=3")
    adapted = np.array(expected_adapted(online, 3))
    assert (online["adapted"] == adapted).all() and online["domain"].nunique() > 1
    expected = 1 - online["n"][adapted == 1].sum() / online["n"].sum()
    assert summary.iloc[-1]["skipped_fraction"] == pytest.approx(expected, abs=1e-6)
    assert (online["backwards"][online["adapted"] == 0] == 0).all()


def test_oracle_run_is_marked_as_using_labels(tmp_path):
    online, summary = _run(tmp_path, "oracle", "protocol=oracle_selection", "protocol.n_steps=2")
    assert summary["uses_labels"].all() and summary["protocol"].eq("oracle_selection").all()
    assert set(online["selected_step"]) <= {1, 2}
    # its own call, one more step, a prediction after each step: 4 forwards per sample
    assert (online["forwards"] == 4 * online["n"]).all()


def test_tables_mark_results_chosen_with_labels(tmp_path):
    from ttabench.results import collect
    from ttabench.tables import LABELS_MARK, build

    run(compose_run("method=tent"), tmp_path / "online")
    run(compose_run("method=tent", "protocol=oracle_selection", "protocol.n_steps=2"),
        tmp_path / "oracle")  # fmt: skip
    table = build(collect([tmp_path]), rows=["method", "protocol"], column="stream")
    assert set(table.cells["protocol"]) == {"online", "oracle_selection" + LABELS_MARK}
    assert any("with the test labels" in note for note in table.notes)


def test_older_runs_read_as_online_and_resume_without_a_rerun(tmp_path):
    import yaml

    from ttabench.results import collect

    run(compose_run(), tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    summary.drop(columns=["protocol", "protocol_params", "uses_labels"]).to_csv(
        tmp_path / "summary.csv", index=False
    )  # as written before protocols existed
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    del config["protocol"], config["consistency"]
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    runs = collect([tmp_path])
    assert set(runs["protocol"]) == {"online"} and set(runs["uses_labels"]) == {"False"}
    again = run(compose_run(), tmp_path)  # the same configuration: skipped, not redone
    assert "protocol" not in again.columns
    with pytest.raises(ValueError, match=r"another configuration \(.*protocol"):
        run(compose_run("protocol=episodic"), tmp_path)


def test_compute_aware_can_answer_skipped_batches_with_the_source_model(tmp_path):
    overrides = ["protocol=compute_aware", "protocol.cost=2", "protocol.skipped=source"]
    run(compose_run("method=tent", *overrides, "save_predictions=true"), tmp_path / "aware")
    run(compose_run("method=source", "norm=source", "save_predictions=true"), tmp_path / "source")
    online = pd.read_csv(tmp_path / "aware" / "online.csv")
    aware, source = (pd.read_csv(tmp_path / d / "predictions.csv") for d in ("aware", "source"))
    skipped = np.repeat(online["adapted"].to_numpy() == 0, online["n"].to_numpy())
    assert skipped.any() and (~skipped).any()
    assert (aware["pred"][skipped] == source["pred"][skipped]).all()
    assert (aware["pred"][~skipped] != source["pred"][~skipped]).any()
