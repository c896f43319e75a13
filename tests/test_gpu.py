"""The CUDA path (marked ``gpu``; run with ``pytest -m gpu`` where a device exists): every norm,
method and stream runs a whole ``run(cfg)`` on ``device=cuda``; the loader's pinned,
non-blocking copies hand out the CPU's images; CUDA and CPU agree on predictions; the execution
switches (amp, channels_last, compile) run and are recorded. The corruptions' own CUDA test is
tests/test_corruptions.py::test_cuda_matches_cpu. CI has no GPU: these are skipped there and run
by a session that has one."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from ttabench.config import list_groups
from ttabench.loader import BatchLoader
from ttabench.run import run

from .conftest import compose_run
from .test_loader import Recording, plan_of

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
GROUPS = list_groups()
SMALL = ["dataset.n_per_domain=128", "stream.batch_size=32"]


def complete_on_cuda(tmp_path, *overrides: str) -> pd.DataFrame:
    summary = run(compose_run("device=cuda", *SMALL, *overrides), tmp_path)
    assert summary["status"].iloc[-1] == "complete", summary["message"].iloc[-1]
    assert summary["cuda_max_mb"].iloc[-1] > 0  # the model and batches really were on the GPU
    return summary


@pytest.mark.parametrize("norm", GROUPS["norm"])
def test_every_norm_runs_on_cuda(tmp_path, norm):
    complete_on_cuda(tmp_path, f"norm={norm}")


@pytest.mark.parametrize("method", GROUPS["method"])
def test_every_method_runs_on_cuda(tmp_path, method):
    extra = ["method.fisher_size=64"] if method == "eata" else []
    complete_on_cuda(tmp_path, f"method={method}", *extra)


@pytest.mark.parametrize("stream", GROUPS["stream"])
def test_every_stream_runs_on_cuda(tmp_path, stream):
    complete_on_cuda(tmp_path, f"stream={stream}", "method=bn")


@pytest.mark.parametrize("prefetch", [0, 2])
def test_loader_copies_the_cpu_images_to_the_gpu(prefetch):
    dataset = Recording()
    plan = plan_of(dataset, domains="mixed")
    cpu = [x for _, x in BatchLoader(dataset, plan, "cpu", 0)]
    gpu = [x for _, x in BatchLoader(dataset, plan, "cuda", prefetch)]
    assert all(g.is_cuda and torch.equal(g.cpu(), c) for g, c in zip(gpu, cpu, strict=True))


def test_cuda_reads_ahead_by_default():
    assert BatchLoader(Recording(), plan_of(Recording()), "cuda").prefetch == 2


def test_cuda_and_cpu_predict_alike(tmp_path):
    on_cpu = run(compose_run("device=cpu", *SMALL, "method=bn"), tmp_path / "cpu")
    on_gpu = complete_on_cuda(tmp_path / "gpu", "method=bn")
    assert abs(on_cpu["error"].iloc[-1] - on_gpu["error"].iloc[-1]) < 1.0


@pytest.mark.parametrize("switch", ["amp=true", "channels_last=true", "compile=true"])
def test_execution_switches_run_on_cuda(tmp_path, switch):
    summary = complete_on_cuda(tmp_path, "method=tent", switch)
    assert bool(summary[switch.split("=")[0]].iloc[-1]) is True
