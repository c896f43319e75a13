"""run(cfg) end to end on a tiny embedded benchmark: files, schema, determinism, and that
nothing is lost when a method fails, diverges or the run is interrupted."""

from __future__ import annotations

import os
import socket
import subprocess

import pandas as pd
import pytest
import torch

from ttabench.methods.source import Source
from ttabench.results import ONLINE_COLUMNS, VOLATILE_COLUMNS
from ttabench.run import run

from .conftest import compose_run

SUMMARY_REQUIRED = [
    "domain",
    "severity",
    "n",
    "error",
    "method",
    "stream",
    "dataset",
    "model",
    "seed",
    "status",
    "n_classes",
    "majority_frac",
    "label_entropy",
    "stream_sha256",
]


class FailingAt(Source):
    """Source that raises ``error`` at batch ``at`` (a crash, or a Ctrl-C)."""

    def __init__(self, model, context=None, at: int = 2, error: str = "RuntimeError"):
        self.calls, self.at, self.error = 0, at, error
        super().__init__(model, context)

    def forward(self, x):
        self.calls += 1
        if self.calls > self.at:
            raise {
                "RuntimeError": RuntimeError,
                "KeyboardInterrupt": KeyboardInterrupt,
                "SystemExit": SystemExit,
            }[self.error]("boom")
        return super().forward(x)


class Peek(Source):
    """Source that reads summary.csv from disk at its first batch (what a kill would leave)."""

    seen: pd.DataFrame | None = None

    def __init__(self, model, context=None, run_dir: str = ""):
        self.run_dir = run_dir
        super().__init__(model, context)

    def forward(self, x):
        if Peek.seen is None:
            Peek.seen = pd.read_csv(f"{self.run_dir}/summary.csv", keep_default_na=False)
        return super().forward(x)


class HalfNaN(Source):
    """Source whose logits are NaN for the first half of every batch (a diverged method)."""

    def forward(self, x):
        logits = super().forward(x).clone()
        logits[: len(x) // 2] = float("nan")
        return logits


@pytest.fixture(scope="module")
def source_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("source")
    return out, run(compose_run("method=source", "save_predictions=true"), out)


def test_run_writes_online_summary_stream_and_config(source_run):
    out, summary = source_run
    online = pd.read_csv(out / "online.csv")
    assert list(online.columns) == list(ONLINE_COLUMNS)
    assert set(SUMMARY_REQUIRED) <= set(summary.columns)
    assert summary["domain"].tolist() == ["gaussian_noise", "contrast", "all"]
    assert (summary["status"] == "complete").all()
    assert (summary["method"] == "source").all() and (summary["stream"] == "iid").all()
    assert (out / "stream.npz").exists() and (out / "config.yaml").exists()
    # The summary is consistent with the online log.
    assert summary.iloc[-1]["n"] == online["n"].sum() == 2 * 256
    err = 100 * (1 - online["correct"].sum() / online["n"].sum())
    assert summary.iloc[-1]["error"] == pytest.approx(err)
    assert online["cum_acc"].iloc[-1] == pytest.approx(1 - err / 100)
    # Last partial batch kept: 256 = 4 x 64 per domain, then the stream ends exactly.
    assert online.groupby("domain")["n"].sum().to_dict() == {"contrast": 256, "gaussian_noise": 256}


def test_predictions_one_row_per_sample_in_stream_order(source_run):
    out, summary = source_run
    preds = pd.read_csv(out / "predictions.csv")
    assert list(preds.columns) == [
        "domain",
        "severity",
        "outliers",
        "index",
        "label",
        "pred",
        "score",
    ]
    assert len(preds) == summary.iloc[-1]["n"]
    for _, group in preds.groupby("domain"):
        assert sorted(group["index"]) == list(range(256)), "every sample exactly once"
    error = 100 * (preds["label"] != preds["pred"]).mean()
    assert summary.iloc[-1]["error"] == pytest.approx(error)


def test_same_config_and_seed_give_identical_csv_apart_from_timing(source_run, tmp_path):
    out, _ = source_run
    run(compose_run("method=source", "save_predictions=true"), tmp_path)
    for name in ("online.csv", "summary.csv", "predictions.csv"):
        a, b = pd.read_csv(out / name), pd.read_csv(tmp_path / name)
        volatile = [c for c in VOLATILE_COLUMNS if c in a]
        pd.testing.assert_frame_equal(a.drop(columns=volatile), b.drop(columns=volatile))


def test_bn_beats_source_on_the_corrupted_iid_stream(source_run, tmp_path):
    _, source = source_run
    bn = run(compose_run("method=bn"), tmp_path)
    assert bn.iloc[-1]["error"] < source.iloc[-1]["error"] - 5


def test_a_failing_method_is_recorded_and_keeps_its_rows(tmp_path):
    cfg = compose_run(f"method._target_={__name__}.FailingAt", "+method.at=2")
    summary = run(cfg, tmp_path)  # does not raise: a sweep goes on
    assert (summary["status"] == "failed").all()
    assert "boom" in summary.iloc[-1]["message"]
    assert len(pd.read_csv(tmp_path / "online.csv")) == 2
    assert "RuntimeError" in (tmp_path / "error.txt").read_text()


def test_an_interrupted_run_keeps_its_rows_and_resumes(tmp_path):
    cfg = compose_run(
        f"method._target_={__name__}.FailingAt", "+method.at=3", "+method.error=KeyboardInterrupt"
    )
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert (summary["status"] == "incomplete").all() and summary.iloc[-1]["n"] == 3 * 64
    # Re-running in the same directory redoes the run and keeps the partial rows aside.
    summary = run(compose_run("method=source"), tmp_path)
    assert (summary["status"] == "complete").all()
    assert len(pd.read_csv(tmp_path / "online.attempt1.csv")) == 3
    # A complete run is not repeated.
    before = (tmp_path / "summary.csv").stat().st_mtime_ns
    run(compose_run("method=source"), tmp_path)
    assert (tmp_path / "summary.csv").stat().st_mtime_ns == before


def test_a_diverging_method_is_reported_not_crashed_on(tmp_path):
    summary = run(compose_run(f"method._target_={__name__}.HalfNaN"), tmp_path)
    assert (summary["status"] == "complete").all()
    assert summary.iloc[-1]["nonfinite"] == 256  # half of 512 samples
    assert summary.iloc[-1]["error"] >= 50.0
    online = pd.read_csv(tmp_path / "online.csv")
    assert (online["nonfinite"] == online["n"] // 2).all()


def test_method_seed_and_stream_seed_are_separate(tmp_path):
    # UnMix-TNS draws its components from the method seed: a seed-dependent method.
    base = ("method=unmix", "save_predictions=true")
    a = run(compose_run(*base, "seed=1", "stream_seed=7"), tmp_path / "a")
    b = run(compose_run(*base, "seed=2", "stream_seed=7"), tmp_path / "b")
    c = run(compose_run(*base, "seed=2", "stream_seed=8"), tmp_path / "c")
    assert a["stream_sha256"].iloc[0] == b["stream_sha256"].iloc[0]
    assert b["stream_sha256"].iloc[0] != c["stream_sha256"].iloc[0]
    assert torch.equal(torch.tensor(a["n"].values), torch.tensor(c["n"].values))
    pa, pb, pc = (pd.read_csv(tmp_path / d / "predictions.csv") for d in "abc")
    same_order = ["domain", "index", "label"]
    assert pa[same_order].equals(pb[same_order])  # the stream ignores the method seed
    assert not pa["pred"].equals(pb["pred"])  # the method does not
    assert not pb[same_order].equals(pc[same_order])


def test_a_run_is_marked_incomplete_while_it_streams(tmp_path):
    Peek.seen = None
    run(compose_run(f"method._target_={__name__}.Peek", f"+method.run_dir={tmp_path}"), tmp_path)
    assert (Peek.seen["status"] == "incomplete").all() and len(Peek.seen) == 1
    assert Peek.seen["message"].iloc[0].startswith(f"running: host={socket.gethostname()} ")
    assert Peek.seen["stream_sha256"].iloc[0] != ""  # the stream is known before streaming
    assert (pd.read_csv(tmp_path / "summary.csv")["status"] == "complete").all()


def test_an_exit_mid_stream_is_incomplete_never_complete(tmp_path):
    # SystemExit (a pre-empted submitit job exits so) is no Exception: it used to leave the
    # initial "complete" status on a truncated summary.
    cfg = compose_run(
        f"method._target_={__name__}.FailingAt", "+method.at=2", "+method.error=SystemExit"
    )
    with pytest.raises(SystemExit):
        run(cfg, tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert (summary["status"] == "incomplete").all() and summary.iloc[-1]["n"] == 2 * 64
    assert summary.iloc[-1]["message"] == "interrupted (SystemExit)"


def test_a_configuration_error_is_recorded_as_failed_and_raised(tmp_path):
    with pytest.raises(Exception, match="batch_size"):
        run(compose_run("stream.batch_size=0"), tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["status"].tolist() == ["failed"] and "batch_size" in summary["message"][0]


def test_a_run_held_by_a_live_process_is_not_started_twice(tmp_path):
    holder = subprocess.Popen(["sleep", "60"])
    try:
        marker = f"running: host={socket.gethostname()} pid={holder.pid} since=now"
        pd.DataFrame(
            {"domain": ["all"], "n": [0], "status": ["incomplete"], "message": [marker]}
        ).to_csv(tmp_path / "summary.csv", index=False)
        summary = run(compose_run(), tmp_path)
        assert summary["message"].iloc[-1] == marker and not (tmp_path / "online.csv").exists()
    finally:
        holder.kill()
        holder.wait()
    assert not os.path.exists(f"/proc/{holder.pid}")
    summary = run(compose_run(), tmp_path)  # the holder is gone: the run is redone
    assert (summary["status"] == "complete").all()


def test_resume_refuses_complete_results_of_another_configuration(tmp_path):
    run(compose_run("method=source"), tmp_path)
    with pytest.raises(ValueError, match=r"another configuration \(.*norm\._target_.*differ"):
        run(compose_run("method=bn"), tmp_path)
    assert pd.read_csv(tmp_path / "summary.csv")["method"].iloc[0] == "source"  # untouched
    run(compose_run("method=source", "device=cpu", "progress=true"), tmp_path)  # same results
    summary = run(compose_run("method=bn", "resume=false"), tmp_path)
    assert summary["method"].iloc[0] == "bn" and (summary["status"] == "complete").all()


def test_resume_with_save_predictions_redoes_a_complete_run_without_them(tmp_path):
    run(compose_run(), tmp_path)
    assert not (tmp_path / "predictions.csv").exists()
    run(compose_run("save_predictions=true"), tmp_path)
    assert len(pd.read_csv(tmp_path / "predictions.csv")) == 512
    assert (tmp_path / "online.attempt1.csv").exists()


def test_a_marker_whose_pid_now_belongs_to_another_process_is_redone(tmp_path):
    from ttabench.resume import _start_time

    other = subprocess.Popen(["sleep", "60"])  # alive, but not the process that wrote the marker
    try:
        start = _start_time(other.pid) + 1
        marker = f"running: host={socket.gethostname()} pid={other.pid} start={start} since=now"
        pd.DataFrame(
            {"domain": ["all"], "n": [0], "status": ["incomplete"], "message": [marker]}
        ).to_csv(tmp_path / "summary.csv", index=False)
        summary = run(compose_run(), tmp_path)
        assert (summary["status"] == "complete").all()
    finally:
        other.kill()
        other.wait()


def test_earlier_attempts_are_never_overwritten(tmp_path):
    from ttabench.resume import keep_partial

    for name, text in [
        ("online.attempt1.csv", "one"),
        ("online.attempt3.csv", "three"),
        ("online.csv", "new"),
        ("error.txt", "trace"),
    ]:
        (tmp_path / name).write_text(text)
    assert keep_partial(tmp_path) == tmp_path / "online.attempt4.csv"
    assert (tmp_path / "online.attempt3.csv").read_text() == "three"
    assert (tmp_path / "online.attempt4.csv").read_text() == "new"
    assert (tmp_path / "error.attempt4.txt").read_text() == "trace"
    assert not (tmp_path / "online.csv").exists() and not (tmp_path / "error.txt").exists()


def test_a_mixed_stream_logs_its_domains_and_summarises_each(tmp_path):
    summary = run(compose_run("stream=mixed"), tmp_path).set_index("domain")
    online = pd.read_csv(tmp_path / "online.csv")
    assert (online["domain"] == "mixed").mean() > 0.5 and online["n_domains"].max() == 2
    assert summary.loc[["gaussian_noise", "contrast"], "n"].tolist() == [256, 256]
    assert summary.loc["all", "n"] == 512


def test_a_gradual_stream_summarises_every_severity_it_visits(tmp_path):
    one = ("dataset.corruptions=[contrast]", "dataset.n_per_domain=64")
    summary = run(compose_run("stream=gradual", *one), tmp_path)
    rows = summary[summary["domain"] == "contrast"]
    # Severities 1-4 are visited twice (up and down), 5 once: 9 visits of 64 samples.
    assert rows.set_index("severity")["n"].to_dict() == {1: 128, 2: 128, 3: 128, 4: 128, 5: 64}
    assert summary.set_index("domain").loc["all", "n"] == 9 * 64
