"""scripts/bench.py at toy sizes: every case the performance issue names produces a row with a
positive throughput, each ratio is taken against the right baseline (bare forward for
no-gradient methods, forward + backward for gradient ones), and the acceptance lines read the
table."""

from __future__ import annotations

import argparse

import pandas as pd
import pytest

from .conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench")


def toy_args(**changes) -> argparse.Namespace:
    sizes = dict(device="cpu", batch_size=16, harness_n=64, harness_batch_size=32,
                 harness_model="embedded", repeats=1, repeats_small=1, batches=1,
                 stream_n=1000, methods="tent,lame")  # fmt: skip
    return argparse.Namespace(**(sizes | changes))


def test_harness_rows(bench):
    runner = bench.Bench(toy_args())
    runner.harness()
    frame = pd.DataFrame(runner.rows).set_index("case")
    assert list(frame.index) == [
        "bare: model(x) loop",
        "harness: run method=source",
        "harness: model share of the run's time",
    ]
    assert frame.loc["bare: model(x) loop", "ratio_to_bare"] == 1.0
    assert 0 < frame.loc["harness: run method=source", "ratio_to_bare"] < 5
    assert 0 < frame.loc["harness: model share of the run's time", "ratio_to_bare"] <= 1
    assert (frame["images_per_s"].dropna() > 0).all()


def test_norm_and_method_rows_use_the_right_baseline(bench):
    runner = bench.Bench(toy_args())
    runner.norms_and_methods()
    frame = pd.DataFrame(runner.rows).set_index("case")
    for norm in ("source", "bn", "unmix", "rbn", "iabn"):
        assert frame.loc[f"norm={norm}", "baseline"] == "bare forward"
    assert frame.loc["method=lame", "baseline"] == "bare forward"  # LAME has no gradient
    assert frame.loc["method=tent", "baseline"] == "bare forward+backward (norm=bn)"
    assert (frame["images_per_s"] > 0).all()
    lines = bench.acceptance(frame.reset_index())
    assert any(line.startswith("UnMix-TNS forward / bn forward") for line in lines)
    assert any(line.startswith("TENT step / bare forward+backward") for line in lines)


def test_data_path_and_memory_rows(bench):
    runner = bench.Bench(toy_args())
    runner.data_path()
    runner.imagenet_stream()
    cases = [r["case"] for r in runner.rows]
    assert "read:cifar_c (memory-mapped .npy)" in cases
    assert sum(c.startswith("read:imagenet_c") for c in cases) == 2
    assert any(c.startswith("corrupt:gaussian_noise") for c in cases)
    stream = runner.rows[-1]
    assert stream["case"].startswith("stream:imagenet_c (1000 images")
    assert stream["images_per_s"] > 0
    # a few 64 x 3 x 224 x 224 batches (9.6 MB as uint8, 38.5 MB as float), not the stream
    assert stream["peak_mem_mb"] < 400


def test_unknown_case_is_refused(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--cases", "harness,bogus"])
    assert exit_info.value.code == 2
    assert (
        "unknown case(s) ['bogus']; valid: harness, norms, data, memory" in capsys.readouterr().err
    )
