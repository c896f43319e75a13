"""Label-free criteria (Cygert et al. 2024): entropy, soft neighbourhood density (Saito et al.
2021) and consistency, against hand computations and on a run."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from ttabench.criteria import label_free_criteria, soft_neighbourhood_density
from ttabench.run import run

from .conftest import compose_run


def snd_by_hand(probs: torch.Tensor, tau: float = 0.05) -> float:
    """Saito et al. Eq. 1-3, one sample at a time."""
    n = len(probs)
    unit = [p / p.norm() for p in probs]
    total = 0.0
    for i in range(n):
        sims = torch.stack([unit[i] @ unit[j] for j in range(n) if j != i]) / tau
        weights = sims.softmax(0)
        total += float(-(weights * weights.log()).sum())
    return total / n


def test_snd_matches_the_definition_and_rewards_dense_neighbourhoods():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(7, 5, generator=g) * 3
    assert soft_neighbourhood_density(logits.log_softmax(1)) == pytest.approx(
        snd_by_hand(logits.softmax(1)), rel=1e-5
    )
    one_cluster = torch.tensor([[9.0, 0, 0, 0]] * 8)  # every sample has 7 close neighbours
    pairs = torch.eye(4).repeat_interleave(2, dim=0) * 9  # each has one
    snd = [soft_neighbourhood_density(x.log_softmax(1)) for x in (one_cluster, pairs)]
    assert snd[0] == pytest.approx(math.log(7), abs=1e-4) and snd[1] < 0.1
    assert math.isnan(soft_neighbourhood_density(logits[:1].log_softmax(1)))  # no neighbours


def test_entropy_and_consistency_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0], [float("nan"), 1.0]])
    p = logits[:2].softmax(1)
    entropy = float(-(p * p.log()).sum(1).mean())
    found = label_free_criteria(logits.log_softmax(1))
    assert found["entropy"] == pytest.approx(entropy, abs=1e-6)  # the NaN row left out
    assert math.isnan(found["consistency"])
    view = torch.tensor([[0.0, 2.0], [0.0, 0.0], [0.0, 0.0]])
    q = view[:2].softmax(1)
    kl = float((p * (p.log() - q.log())).sum(1).mean())
    pair = (logits.log_softmax(1), view.log_softmax(1))
    assert label_free_criteria(pair[0], pair)["consistency"] == pytest.approx(kl, abs=1e-6)
    same = (pair[0], pair[0])
    assert label_free_criteria(pair[0], same)["consistency"] == pytest.approx(0.0, abs=1e-6)


def test_criteria_stay_finite_for_confident_outputs():
    huge = torch.tensor([[1e38, 0.0, -1e38], [0.0, 1e38, 0.0]]).log_softmax(1)
    found = label_free_criteria(huge, (huge, huge))
    assert found["entropy"] == 0.0 and found["consistency"] == 0.0 and found["snd"] >= 0


def test_consistency_costs_the_method_nothing_and_changes_no_result(tmp_path):
    run(compose_run("method=tent"), tmp_path / "plain")
    run(compose_run("method=tent", "consistency=true"), tmp_path / "view")
    plain, view = (pd.read_csv(tmp_path / d / "online.csv") for d in ("plain", "view"))
    same = ["correct", "forwards", "backwards", "entropy", "snd"]
    pd.testing.assert_frame_equal(plain[same], view[same])
    assert plain["consistency"].isna().all() and (view["consistency"] > 0).all()
    summary = pd.read_csv(tmp_path / "view" / "summary.csv")
    assert summary["consistency"].notna().all() and summary["snd"].notna().all()


def test_consistency_must_be_a_boolean(tmp_path):
    with pytest.raises(ValueError, match="consistency must be true or false"):
        run(compose_run("consistency=maybe"), tmp_path)
