"""Evaluation protocols (``protocol=...``): what defines each, on real methods and streams.

- ``snapshot``/``restore`` bring back everything a method learned (the oracle relies on it);
- ``oracle_selection`` never scores worse than the last state it tried, on the same batch;
- ``episodic`` equals a freshly built method per batch;
- ``compute_aware`` with a cost ratio of 1 is the online protocol, and skips
  ``1 - 1 / ceil(C * eta)`` of the batches for a constant cost C.
"""

from __future__ import annotations

import math

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
    torch.manual_seed(0)
    first = [method(x) for x in xs[1:]]
    method.restore(state)
    torch.manual_seed(0)
    again = [method(x) for x in xs[1:]]
    for a, b in zip(first, again, strict=True):
        assert torch.allclose(a, b, atol=1e-6), f"{name}: restore missed some learned state"
    method.restore(state)  # a snapshot can be restored twice
    torch.manual_seed(0)
    assert torch.allclose(method(xs[1]), first[0], atol=1e-6)


def test_predict_moves_nothing():
    method = make_method("method=tent", "norm=ema")
    x = shifted_batch()
    before = {k: v.clone() for k, v in method.state_dict().items()}
    method.predict(x)
    after = method.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert method.pop_costs()["backwards"] == 0


def _correct(logits: torch.Tensor, y: torch.Tensor) -> int:
    return int((logits.argmax(1) == y).sum())


def test_oracle_scores_the_best_adapted_state_with_labels_and_goes_on_from_it():
    xs = batches(3)
    y = torch.arange(32) % 10
    oracle, reference = OracleSelection(n_steps=4), make_method("method=tent")
    method = make_method("method=tent")
    for x in xs:
        answer = oracle(method, x, y)
        # the same steps by hand on a copy: state k's prediction is the next call's output
        reference(x)
        scores, states = [], []
        for _ in range(4):
            states.append(reference.snapshot())
            logits = reference(x)
            loss = torch.nn.functional.cross_entropy(logits, y).item()
            scores.append((_correct(logits, y), -loss))
        best = max(range(4), key=lambda k: (scores[k], -k))
        assert answer.selected_step == best + 1
        assert _correct(answer.logits, y) == scores[best][0]
        assert _correct(answer.logits, y) >= scores[-1][0], "worse than the last state tried"
        reference.restore(states[best])
    assert torch.allclose(method(xs[0]), reference(xs[0]), atol=1e-6), "not the chosen state"


def test_oracle_needs_labels_and_is_marked():
    assert OracleSelection.uses_labels and not Online.uses_labels
    with pytest.raises(ValueError, match="needs the batch's labels"):
        OracleSelection(n_steps=2)(make_method("method=tent"), shifted_batch(), None)
    with pytest.raises(ValueError, match="protocol.n_steps must be >= 1"):
        OracleSelection(n_steps=0)


def test_episodic_equals_a_fresh_method_per_batch():
    xs = batches(3)
    method, episodic = make_method("method=eta"), Episodic()
    for x in xs:
        fresh = make_method("method=eta")
        assert torch.allclose(episodic(method, x, None).logits, fresh(x), atol=1e-6)


class Stub(TTAMethod):
    """Costs ``passes`` forwards per sample per call: a synthetic cost."""

    def __init__(self, passes: int) -> None:
        self.passes = passes
        super().__init__(torch.nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.forwards += self.passes * len(x)
        return x

    def predict(self, x: torch.Tensor) -> torch.Tensor:
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
    with pytest.raises(
        ValueError, match="protocol.skipped='old' is unknown; valid: latest, source"
    ):
        ComputeAware(skipped="old")


def _run(tmp_path, name: str, *overrides: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = tmp_path / name
    run(compose_run("method=tent", *overrides), out)
    return pd.read_csv(out / "online.csv"), pd.read_csv(out / "summary.csv")


def test_compute_aware_at_cost_one_is_the_online_protocol(tmp_path):
    online, s_online = _run(tmp_path, "online")
    aware, s_aware = _run(tmp_path, "aware", "protocol=compute_aware", "protocol.cost=1")
    keep = [c for c in online if c not in (*VOLATILE_COLUMNS, "relative_cost")]
    pd.testing.assert_frame_equal(online[keep], aware[keep])
    assert s_aware["skipped_fraction"].eq(0).all() and s_aware["protocol"].eq("compute_aware").all()
    assert s_online["protocol"].eq("online").all() and not s_online["uses_labels"].any()


def test_compute_aware_run_records_the_skipped_fraction(tmp_path):
    online, summary = _run(tmp_path, "aware", "protocol=compute_aware", "protocol.cost=3")
    expected = 1 - online["n"][::3].sum() / online["n"].sum()
    assert summary.iloc[-1]["skipped_fraction"] == pytest.approx(expected, abs=1e-6)
    assert (online["adapted"] == [int(i % 3 == 0) for i in range(len(online))]).all()
    assert (online["backwards"][online["adapted"] == 0] == 0).all()


def test_oracle_run_is_marked_as_using_labels(tmp_path):
    online, summary = _run(tmp_path, "oracle", "protocol=oracle_selection", "protocol.n_steps=2")
    assert summary["uses_labels"].all() and summary["protocol"].eq("oracle_selection").all()
    assert set(online["selected_step"]) <= {1, 2}
    assert (online["forwards"] == 3 * online["n"]).all(), "n_steps + 1 calls per batch"


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
