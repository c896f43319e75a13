"""The batch loader and the lean hot path: read-ahead never changes a batch or its order, a read
error surfaces at its batch, the reading thread always stops; execution switches (amp,
channels_last) are validated and recorded; the vectorised summary equals the per-batch rule."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pandas as pd
import pytest
import torch

from ttabench.data.folder_c import FolderC, decode
from ttabench.domains import Domain
from ttabench.loader import BatchLoader, fetch_images
from ttabench.results import STAT_COLUMNS, summarize
from ttabench.run import run
from ttabench.streams import Stream

from .c_fixtures import write_folder_c
from .conftest import compose_run

DOMAINS = [Domain("gaussian_noise", 5), Domain("contrast", 5)]


class Recording:
    """A dataset whose images encode (domain, index), recording the threads that read it."""

    name, num_classes, domains = "recording", 4, DOMAINS

    def __init__(self, n: int = 100, fail_at: int | None = None) -> None:
        self.n, self.fail_at, self.threads = n, fail_at, set()
        self.calls = 0

    def labels(self, domain: Domain) -> np.ndarray:
        return np.arange(self.n, dtype=np.int64) % self.num_classes

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        self.threads.add(threading.get_ident())
        self.calls += 1
        if self.fail_at is not None and self.calls > self.fail_at:
            raise FileNotFoundError(f"image {indices[0]} of {domain.name} is missing")
        value = torch.as_tensor(indices % 200 + 50 * DOMAINS.index(domain), dtype=torch.uint8)
        return value.view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()

    def provenance(self) -> dict[str, str]:
        return {}


def plan_of(dataset: Recording, **knobs):
    knobs = {"batch_size": 8, "seed": 3, **knobs}
    return Stream(**knobs).build(dataset.domains, dataset.labels)


def loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "ttabench-loader"]


@pytest.mark.parametrize("domains", ["continual", "mixed"])
@pytest.mark.parametrize("prefetch", [1, 3])
def test_read_ahead_gives_the_same_batches_in_the_same_order(prefetch, domains):
    dataset = Recording()
    plan = plan_of(dataset, domains=domains)
    direct = [
        (b.number, fetch_images(dataset, plan, b.domain_ids, b.indices)) for b in plan.batches()
    ]
    ahead = [(b.number, x) for b, x in BatchLoader(dataset, plan, "cpu", prefetch)]
    assert [n for n, _ in ahead] == list(range(plan.n_batches))
    for (_, want), (_, got) in zip(direct, ahead, strict=True):
        assert got.dtype == torch.float32
        assert torch.equal(got, want.float() / 255)
    assert not loader_threads()


def test_read_ahead_reads_in_one_thread_that_is_not_the_callers():
    dataset = Recording()
    list(BatchLoader(dataset, plan_of(dataset), "cpu", prefetch=2))
    assert len(dataset.threads) == 1 and threading.get_ident() not in dataset.threads


def test_default_reads_in_the_calling_thread_on_the_cpu():
    dataset = Recording()
    loader = BatchLoader(dataset, plan_of(dataset), "cpu")
    assert loader.prefetch == 0
    list(loader)
    assert dataset.threads == {threading.get_ident()}


@pytest.mark.parametrize("prefetch", [0, 2])
def test_a_read_error_surfaces_at_its_batch_after_the_earlier_ones(prefetch):
    dataset = Recording(fail_at=5)
    served = []
    with pytest.raises(FileNotFoundError, match="is missing"):
        for batch, _ in BatchLoader(dataset, plan_of(dataset), "cpu", prefetch):
            served.append(batch.number)
    assert served == [0, 1, 2, 3, 4]
    assert not loader_threads()


def test_leaving_early_stops_the_reading_thread():
    dataset = Recording(n=2000)
    with BatchLoader(dataset, plan_of(dataset), "cpu", prefetch=2) as loader:
        for batch, _ in loader:
            if batch.number == 3:
                break
    assert not loader_threads()
    assert dataset.calls < 10  # it read a few batches ahead, not the whole stream


@pytest.mark.parametrize("bad", [-1, "2", True, 1.5])
def test_prefetch_must_be_a_count(bad):
    with pytest.raises(ValueError, match="prefetch must be an integer >= 0"):
        BatchLoader(Recording(), plan_of(Recording()), "cpu", bad)


def test_channels_last_images():
    dataset = Recording()
    plan = plan_of(dataset)
    _, plain = next(iter(BatchLoader(dataset, plan, "cpu", 0)))
    _, x = next(iter(BatchLoader(dataset, plan, "cpu", 0, channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last) and not plain.is_contiguous(
        memory_format=torch.channels_last
    )
    assert torch.equal(x, plain)


def test_parallel_decoding_keeps_images_and_order(tmp_path):
    wnids = [f"n{k:02d}000000" for k in range(1, 5)]
    root = write_folder_c(tmp_path / "ImageNet-C", ["fog"], wnids, files=3, size=32)
    paths = sorted(root.rglob("*.JPEG"))[::-1]
    with ThreadPoolExecutor(3) as pool:
        assert np.array_equal(decode(paths, pool), decode(paths))
    serial = FolderC(tmp_path, corruptions=["fog"], n_per_domain=None, num_classes=4, workers=0)
    threaded = FolderC(tmp_path, corruptions=["fog"], n_per_domain=None, num_classes=4, workers=4)
    idx = np.array([11, 0, 5, 5, 7])
    domain = Domain("fog", 5)
    assert torch.equal(serial.images(domain, idx), threaded.images(domain, idx))
    with pytest.raises(ValueError, match="workers must be an integer >= 0"):
        FolderC(tmp_path, corruptions=["fog"], num_classes=4, workers=-2)


def _rows_without_time(run_dir) -> pd.DataFrame:
    return pd.read_csv(run_dir / "online.csv").drop(columns=["seconds"])


def test_a_run_with_read_ahead_logs_the_same_rows(tmp_path):
    run(compose_run("method=bn", "prefetch=0"), tmp_path / "a")
    run(compose_run("method=bn", "prefetch=2"), tmp_path / "b")
    pd.testing.assert_frame_equal(
        _rows_without_time(tmp_path / "a"), _rows_without_time(tmp_path / "b")
    )


def test_execution_switches_are_recorded_and_keep_predictions(tmp_path):
    base = run(compose_run("method=bn"), tmp_path / "base")
    fast = run(compose_run("method=bn", "channels_last=true", "amp=true"), tmp_path / "fast")
    assert (fast["status"] == "complete").all()
    assert fast[["amp", "channels_last", "compile"]].iloc[-1].tolist() == [True, True, False]
    assert base[["amp", "channels_last"]].iloc[-1].tolist() == [False, False]
    # bfloat16 autocast moves logits a little, not the accuracy
    assert abs(fast.iloc[-1].error - base.iloc[-1].error) < 3.0
    cl = run(compose_run("method=bn", "channels_last=true"), tmp_path / "cl")
    agree = (
        _rows_without_time(tmp_path / "cl")["correct"]
        == _rows_without_time(tmp_path / "base")["correct"]
    ).mean()
    assert agree > 0.9 and abs(cl.iloc[-1].error - base.iloc[-1].error) < 0.5


@pytest.mark.parametrize(
    "override", ["amp=maybe", "channels_last=1", "prefetch=-1", "prefetch=two"]
)
def test_bad_execution_switches_are_refused_and_recorded(tmp_path, override):
    key = override.split("=")[0]
    with pytest.raises(ValueError, match=key):
        run(compose_run(override), tmp_path)
    summary = pd.read_csv(tmp_path / "summary.csv")
    assert summary["status"].iloc[-1] == "failed" and key in summary["message"].iloc[-1]


def _naive_summary(names, sample_domain, correct, rows, batch_domains):
    """The per-domain rule written plainly (one pass per domain over batches)."""
    out = {}
    for d in dict.fromkeys(sample_domain.tolist()):
        mask = sample_domain == d
        batches = [r for r, doms in zip(rows, batch_domains, strict=True) if d in doms]
        n = sum(r["n"] for r in batches)
        out[names[d]] = {
            "n": int(mask.sum()),
            "error": 100 * (1 - correct[mask].mean()),
            **{c: np.mean([r[c] for r in batches]) for c in STAT_COLUMNS},
            "forwards_per_sample": sum(r["forwards"] for r in batches) / n,
            "nonfinite_loss": sum(1 for r in batches if r["nonfinite_loss"]),
        }
    return out


def test_vectorised_summary_equals_the_per_domain_rule():
    rng = np.random.default_rng(1)
    names, rows, batch_domains, doms = ["a", "b", "c", "d"], [], [], []
    for step in range(60):  # mixed batches of 1-3 domains, domain 3 never seen
        d = rng.choice(3, size=rng.integers(1, 9))
        doms.append(d)
        batch_domains.append(np.unique(d))
        rows.append(
            {
                "step": step, "n": len(d), "nonfinite": 0, "forwards": 2 * len(d), "backwards": 0,
                "seconds": 0.01, "recoveries": 0, "nonfinite_loss": int(rng.random() < 0.1),
                **{c: float(rng.random()) for c in STAT_COLUMNS},
            }
        )  # fmt: skip
    sample_domain = np.concatenate(doms)
    correct = rng.random(len(sample_domain)) < 0.7
    got = summarize(names, [5] * 4, sample_domain, correct, rows, batch_domains, {"x": 1})
    want = _naive_summary(names, sample_domain, correct, rows, batch_domains)
    assert got["domain"].tolist() == [*want, "all"]
    for name, values in want.items():
        row = got[got["domain"] == name].iloc[0]
        for key, value in values.items():
            assert row[key] == pytest.approx(value), (name, key)
    assert got.iloc[-1]["n"] == len(sample_domain) and got.iloc[-1]["x"] == 1


def test_read_ahead_holds_at_most_prefetch_batches_beyond_the_current_one():
    """What bounds memory on a 50,000-image stream: the reading thread waits for the model."""
    dataset = Recording(n=4000)
    ahead = []
    for batch, _ in BatchLoader(dataset, plan_of(dataset), "cpu", prefetch=2):
        threading.Event().wait(0.002)  # a slow model: the reader fills its queue meanwhile
        ahead.append(dataset.calls - (batch.number + 1))
    # queued (2) + one read waiting for a free slot
    assert max(ahead) <= 3 and max(ahead) >= 1


@pytest.mark.slow
def test_compile_runs_a_gradient_method_and_keeps_its_accuracy(tmp_path):
    """torch.compile on the CPU (inductor needs a C compiler): same method, same errors."""
    plain = run(compose_run("method=tent"), tmp_path / "plain")
    compiled = run(compose_run("method=tent", "compile=true"), tmp_path / "compiled")
    assert compiled["compile"].iloc[-1] == True  # noqa: E712 (a numpy bool)
    assert abs(compiled["error"].iloc[-1] - plain["error"].iloc[-1]) < 1.0


@pytest.mark.parametrize("norm", ["alpha", "ema", "rbn", "iabn", "unmix"])
def test_amp_keeps_every_norms_statistics_in_float32(tmp_path, norm):
    """Under bfloat16 autocast the norms' running buffers stay float32 (RBN's lerp of a bf16
    mean into them once failed) and the errors stay close to float32's."""
    small = ["dataset.corruptions=[gaussian_noise]", "dataset.n_per_domain=192", f"norm={norm}"]
    fp32 = run(compose_run(*small), tmp_path / "fp32")
    bf16 = run(compose_run(*small, "amp=true"), tmp_path / "bf16")
    assert bf16["status"].iloc[-1] == "complete", bf16["message"].iloc[-1]
    assert abs(bf16["error"].iloc[-1] - fp32["error"].iloc[-1]) < 4.0


def test_a_corrupt_jpeg_names_its_file(tmp_path):
    wnids = [f"n{k:02d}000000" for k in range(1, 3)]
    root = write_folder_c(tmp_path / "ImageNet-C", ["fog"], wnids, files=2, size=32)
    broken = sorted((root / "fog" / "5").rglob("*.JPEG"))[1]
    broken.write_bytes(broken.read_bytes()[:200])  # truncated transfer
    dataset = FolderC(tmp_path, corruptions=["fog"], n_per_domain=None, num_classes=2, workers=0)
    with pytest.raises(ValueError, match=f"image {broken} cannot be decoded"):
        dataset.images(Domain("fog", 5), np.arange(4))


def test_a_loader_can_be_iterated_twice():
    dataset = Recording()
    loader = BatchLoader(dataset, plan_of(dataset), "cpu", prefetch=2)
    first = [b.number for b, _ in loader]
    assert [b.number for b, _ in loader] == first and not loader_threads()
