"""scripts/bench_corruptions.py: its throughput table is well formed and its last row is the
time of one image through every listed corruption (the figure quoted in the closing notes)."""

from __future__ import annotations

import time

import pytest

from .conftest import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_corruptions")


def rows(text: str) -> list[list[str]]:
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| ") and "---" not in line
    ]


def test_throughput_table_sums_per_image_times(bench, capsys):
    names = ["contrast", "glass_blur"]
    bench.main(
        [
            "throughput",
            "--names",
            *names,
            "--batch",
            "4",
            "--ref-images",
            "2",
            "--repeat",
            "1",
            "--threads",
            "1",
        ]
    )
    table = rows(capsys.readouterr().out)
    header, per_name, total = table[0], table[1:-1], table[-1]
    assert header[0] == "corruption" and [r[0] for r in per_name] == names
    rates = [(float(r[1]), float(r[2])) for r in per_name]
    assert all(fast > 0 and slow > 0 for fast, slow in rates)
    for (fast, slow), r in zip(rates, per_name, strict=True):
        assert float(r[3].rstrip("x")) == pytest.approx(fast / slow, rel=0.05, abs=0.05)
    # One image through both: the per-image times add up (rates are rounded in the table).
    assert float(total[1]) == pytest.approx(1 / sum(1 / f for f, _ in rates), rel=0.05, abs=1)
    assert float(total[2]) == pytest.approx(1 / sum(1 / s for _, s in rates), rel=0.05, abs=1)


def test_median_rate_ignores_one_slow_call(bench):
    durations = iter([0.0, 0.01, 0.01, 0.3])  # warm-up, then three timed calls

    def run() -> None:
        time.sleep(next(durations))

    assert (
        bench.median_rate(run, images=10, repeat=3) > 500
    )  # 10 images / ~0.01 s; the mean time would give < 100
