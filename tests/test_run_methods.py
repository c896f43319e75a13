"""Adapting methods through the real run path: every method YAML end to end, any method with any
norm, the cost columns, and a diverging method recorded rather than crashing."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ttabench.config import config_dir
from ttabench.results import COST_COLUMNS, RUN_COST_COLUMNS, VOLATILE_COLUMNS
from ttabench.run import run

from .conftest import compose_run

METHODS = sorted(p.stem for p in (config_dir() / "method").glob("*.yaml"))
SMALL = ("dataset.n_per_domain=128", "method.fisher_size=64")


def small(method: str, *overrides: str) -> list[str]:
    """A 2 x 128-image run; EATA's Fisher on 64 source samples."""
    return [f"method={method}", *SMALL[: 2 if "eata" in method else 1], *overrides]


@pytest.mark.parametrize("name", METHODS)
def test_every_method_config_runs_end_to_end_with_its_costs(name, tmp_path):
    summary = run(compose_run(*small(name)), tmp_path)
    assert (summary["status"] == "complete").all()
    assert set(COST_COLUMNS) | set(RUN_COST_COLUMNS) <= set(summary.columns)
    every = summary.iloc[-1]
    assert every["forwards_per_sample"] >= 1 and every["peak_rss_mb"] > 0
    assert every["nonfinite_loss"] == 0


def test_tent_and_sar_costs_per_sample_in_summary(tmp_path):
    tent = run(compose_run(*small("tent")), tmp_path / "tent").iloc[-1]
    assert (tent["forwards_per_sample"], tent["backwards_per_sample"]) == (1, 1)
    sar = run(compose_run(*small("sar", "method.e_margin=1.0")), tmp_path / "sar").iloc[-1]
    assert (sar["forwards_per_sample"], sar["backwards_per_sample"]) == (2, 2)
    source = run(compose_run(*small("source")), tmp_path / "source").iloc[-1]
    assert (source["forwards_per_sample"], source["backwards_per_sample"]) == (1, 0)


@pytest.mark.parametrize(
    ("method", "norm"),
    [
        ("tent", "unmix"),
        ("sar", "rbn"),
        ("eata", "alpha"),
        ("deyo", "ema"),
        ("rotta", "unmix"),
        ("note", "unmix"),
        ("cotta", "unmix"),
        ("roid", "rbn"),
    ],
)
def test_any_method_composes_with_any_norm(method, norm, tmp_path):
    lighter = {"cotta": ["method.n_augment=2"], "note": ["dataset.n_per_domain=64"]}
    cfg = compose_run(*small(method, f"norm={norm}", *lighter.get(method, [])))
    assert cfg.hydra.runtime.choices.norm == norm
    summary = run(cfg, tmp_path)
    assert (summary["status"] == "complete").all() and (summary["norm"] == norm).all()


def test_a_diverging_method_is_recorded_with_its_step_and_the_run_goes_on(tmp_path):
    cfg = compose_run(
        *small("tent", "method.optim._target_=torch.optim.SGD", "~method.optim.betas"),
        "method.optim.lr=1e30",
    )
    summary = run(cfg, tmp_path)
    every = summary.iloc[-1]
    assert every["status"] == "complete" and every["n"] == 256, "every batch still scored"
    assert every["nonfinite_loss"] > 0 and every["nonfinite"] > 0
    online = pd.read_csv(tmp_path / "online.csv")
    first = online.loc[online["nonfinite_loss"] > 0, "step"].min()
    assert int(every["first_nonfinite_loss_step"]) == first


def test_method_params_record_the_values_and_the_defaults_used(tmp_path):
    summary = run(compose_run(*small("eta", "method.optim.lr=0.002")), tmp_path)
    params = summary.iloc[-1]["method_params"]
    assert "optim._target_=torch.optim.Adam" in params and "optim.lr=0.002" in params
    assert "defaults=embedded" in params and "per_dataset" not in params


@pytest.mark.parametrize("method", ["deyo", "rotta"])
def test_same_config_and_seed_give_identical_csv_for_a_random_method(method, tmp_path):
    frames = []
    for name in ("a", "b"):
        run(compose_run(*small(method)), tmp_path / name)
        frames.append([pd.read_csv(tmp_path / name / f) for f in ("online.csv", "summary.csv")])
    for a, b in zip(*frames, strict=True):
        volatile = [c for c in VOLATILE_COLUMNS if c in a]
        pd.testing.assert_frame_equal(a.drop(columns=volatile), b.drop(columns=volatile))


def test_the_method_seed_drives_the_augmentations():
    from .test_methods import make_method, shifted_batch

    x = shifted_batch(8)
    outputs = {}
    for seed in (1, 1, 2):
        method = make_method("method=cotta", f"seed={seed}", "method.ap=1.0", "method.n_augment=2")
        assert method.context.seed == seed
        outputs.setdefault(seed, []).append(method(x))
    assert torch.equal(*outputs[1]) and not torch.allclose(outputs[1][0], outputs[2][0])


@pytest.mark.parametrize(
    "overrides",
    [("method=rotta", "stream=ptta"), ("method=rotta", "norm=unmix", "stream=dirichlet")],
)
def test_the_documented_rotta_commands_run(overrides, tmp_path):
    summary = run(compose_run(*overrides, "dataset.n_per_domain=200"), tmp_path)
    every = summary.iloc[-1]
    assert every["status"] == "complete" and every["backwards_per_sample"] > 0
    assert every["norm"] == ("unmix" if "norm=unmix" in overrides else "rbn")


def test_cotta_counts_its_augmented_views(tmp_path):
    cotta = run(compose_run(*small("cotta", "method.ap=1.0", "method.n_augment=4")), tmp_path)
    assert cotta.iloc[-1]["forwards_per_sample"] == 3 + 4
