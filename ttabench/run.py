"""``run(cfg)``: build the four parts from a composed config, stream, and write the results.

A plain function: the CLI calls it from the Hydra app, tests call it with a config composed by
``hydra.compose``. Writes into ``run_dir``: ``online.csv``, ``summary.csv``, ``stream.npz`` (the
realised order; its SHA-256 is in ``summary.csv``), ``config.yaml`` and, with
``save_predictions=true``, ``predictions.csv``. Resuming is :mod:`ttabench.resume`'s.
"""

from __future__ import annotations

import logging
import time
import traceback
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from ttabench.config import list_groups
from ttabench.data.outliers import WithOutliers, build_source
from ttabench.data.source_data import source_data_provider
from ttabench.errors import one_line, root_error
from ttabench.loader import BatchLoader
from ttabench.lock import RunLock
from ttabench.memory import PeakMemory
from ttabench.methods.base import MethodContext, TTAMethod
from ttabench.methods.defaults import apply_dataset_defaults
from ttabench.paths import make_dir
from ttabench.protocols import Protocol
from ttabench.results import OnlineLog, summarize, write_csv_atomic
from ttabench.resume import RunState, keep_partial, run_state, running_message
from ttabench.run_keys import flag, run_keys
from ttabench.runner import StreamRecord, run_stream
from ttabench.signals import interruptible, signal_of
from ttabench.streams import StreamPlan

log = logging.getLogger(__name__)
PARTS = ("model", "dataset", "stream", "norm", "method", "protocol")


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> pd.DataFrame:
    """Run one benchmark configuration; return its summary table (also in summary.csv).

    Resumable (``resume=true``, the default): a run whose ``summary.csv`` says ``complete`` is
    not repeated, one that a live process on this host is running is left alone, anything else
    (failed, interrupted, killed) is run again with the earlier ``online.csv`` kept aside. The
    first thing written is a ``summary.csv`` marked ``incomplete`` (``message=running: ...``),
    refreshed at domain boundaries, so a run killed at any moment is never mistaken for a
    finished one. A configuration error (bad knob, missing data) is recorded as ``failed`` and
    raised; an exception while streaming is recorded as ``failed`` and not raised, so a sweep
    goes on with its other runs. One process per directory: a second one raises
    :class:`~ttabench.lock.RunDirectoryBusy` before touching it.
    """
    run_dir = make_dir(run_dir or HydraConfig.get().runtime.output_dir, "run directory")
    with RunLock(run_dir), interruptible():  # the lock before anything touches the directory
        return _run(cfg, run_dir)


def _run(cfg: DictConfig, run_dir: Path) -> pd.DataFrame:
    try:
        keys = run_keys(cfg)
        method_defaults = apply_dataset_defaults(cfg, _overrides(cfg))
    except ValueError as exc:  # a bad run key or method knob: recorded (a sweep's report shows
        if run_state(run_dir) is not RunState.COMPLETE:  # it), raised; complete results stay
            _write_summary(run_dir, None, StreamRecord(), _meta(cfg) | _failed(run_dir, exc))
        raise
    own = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # hydra's needs HydraConfig
    if keys.resume:
        state = run_state(run_dir)
        if state is RunState.COMPLETE:
            _check_same_config(run_dir, own)
            if keys.save_predictions and not (run_dir / "predictions.csv").exists():
                log.info("%s is complete but has no predictions.csv: running it again", run_dir)
                state = RunState.REDO
        if state is not RunState.REDO:
            why = "complete" if state is RunState.COMPLETE else "running in another process"
            log.info("%s is %s; skipping (resume=false to rerun)", run_dir, why)
            return pd.read_csv(run_dir / "summary.csv")
    meta = _meta(cfg, method_defaults)
    # Mark before touching anything else: from here on a kill leaves an `incomplete` summary.
    _write_summary(run_dir, None, StreamRecord(), meta | _status("incomplete", running_message()))
    keep_partial(run_dir)
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(own, resolve=True))
    if keys.threads:  # else torch's default: the CPUs this process may use (see run.yaml)
        torch.set_num_threads(keys.threads)

    device = keys.device
    log.info("device %s, %d torch threads", device, torch.get_num_threads())
    torch.manual_seed(keys.seed)
    try:
        dataset = instantiate(cfg.dataset)
        stream = instantiate(cfg.stream)
        if stream.outliers.active:
            source = build_source(stream.outliers.source, dataset, keys.ood_root)
            dataset = WithOutliers(dataset, source)
        plan = stream.build(dataset.domains, dataset.labels)
        plan.save(run_dir)
        meta |= {
            "stream_sha256": plan.sha256(),
            "provenance": ";".join(f"{k}={v}" for k, v in dataset.provenance().items()),
        }
        memory = PeakMemory(device)  # from here: the model, the method's set-up, the stream
        method = build_method(cfg, int(dataset.num_classes), device)
        protocol = build_protocol(cfg, method, device)
        loader = BatchLoader(dataset, plan, device, keys.prefetch, keys.channels_last)
    except Exception as exc:  # a configuration error: recorded, then the CLI reports it
        _write_summary(run_dir, None, StreamRecord(), meta | _failed(run_dir, exc))
        raise
    record = StreamRecord()
    running = meta | _status("incomplete", running_message())
    _write_summary(run_dir, plan, record, running)  # the marker, now with the stream's SHA-256
    online = OnlineLog(run_dir / "online.csv", _Refresher(run_dir, plan, record, running))
    status = _status("incomplete", "interrupted")  # until the stream has run to its end
    try:
        with loader:
            run_stream(
                method,
                loader,
                online,
                record,
                keys.progress,
                keys.amp,
                protocol,
                keys.consistency,
                keys.outlier_score,
            )
        status = _status("complete", "")
    except Exception as exc:  # recorded, not raised: a sweep goes on with its other runs
        status = _failed(run_dir, exc)
    except BaseException as exc:  # Ctrl-C, SIGTERM, SystemExit (submitit pre-emption): re-raised
        status = _status("incomplete", f"interrupted ({signal_of(exc)[0]})")
        raise
    finally:
        online.close()
        if keys.save_predictions or plan.outlier_mask().any():
            _write_predictions(run_dir, plan, record)
        # Last, so a summary that says complete implies every other file is written.
        summary = _write_summary(run_dir, plan, record, meta | memory.peaks() | status)
    log.info(
        "%s: error %.2f%% over %d samples",
        status["status"],
        summary.iloc[-1].error,
        summary.iloc[-1].n,
    )
    return summary


class _Refresher:
    """Rewrites the partial summary at domain boundaries, at a bounded cost.

    Summarising is linear in the batches seen, so on long batch-size-1 streams (or mixed streams,
    whose batch domain changes almost every batch) it is done at most once per ``20 x`` its own
    duration and once a second: under 5 % of the run's time.
    """

    def __init__(
        self, run_dir: Path, plan: StreamPlan, record: StreamRecord, meta: dict[str, Any]
    ) -> None:
        self.run_dir, self.plan, self.record, self.meta = run_dir, plan, record, meta
        self.next_at = 0.0

    def __call__(self) -> None:
        if time.monotonic() < self.next_at:
            return
        start = time.monotonic()
        _write_summary(self.run_dir, self.plan, self.record, self.meta)
        now = time.monotonic()
        self.next_at = now + max(1.0, 20 * (now - start))


def build_method(cfg: DictConfig, num_classes: int, device: torch.device | str) -> TTAMethod:
    """Model (under its norm, on the device), then the method around it with its context
    (``cfg.method`` already resolved by ``apply_dataset_defaults``)."""
    check_combination(cfg)
    model = instantiate(cfg.norm).apply(instantiate(cfg.model)).to(device)
    if flag(cfg, "channels_last"):
        model = model.to(memory_format=torch.channels_last)
    if flag(cfg, "compile"):
        model.compile()  # in place: the module (and what methods copy of it) stays the same type
    context = MethodContext(
        num_classes=num_classes,
        batch_size=int(cfg.stream.batch_size),
        source_data=source_data_provider(
            str(cfg.dataset.get("name", "")),
            cfg.get("source_data") or cfg.dataset.get("root"),
            int(cfg.dataset.get("seed", 0) or 0),
            int(cfg.seed),
        ),
        device=device,
        seed=int(cfg.seed),
    )
    try:
        return instantiate(cfg.method, model=model, context=context)
    except InstantiationException as exc:  # the method's own message, without Hydra's wrapping
        if isinstance(exc.__cause__, ValueError | FileNotFoundError):
            raise exc.__cause__ from None
        raise


def build_protocol(cfg: DictConfig, method: TTAMethod, device: torch.device | str) -> Protocol:
    """The evaluation protocol, started with the method (and, if it answers skipped batches with
    it, the source model: ``cfg.model`` as loaded, frozen, on the device)."""
    try:
        protocol = instantiate(cfg.protocol)
    except InstantiationException as exc:  # the protocol's own message, without Hydra's
        if isinstance(exc.__cause__, ValueError):
            raise exc.__cause__ from None
        raise
    source = None
    if protocol.needs_source_model:
        source = instantiate(cfg.model).to(device).eval().requires_grad_(False)
        if flag(cfg, "channels_last"):
            source = source.to(memory_format=torch.channels_last)
    protocol.start(method, source)
    return protocol


#: shipped source models -> the dataset preset whose classes they were trained on
SHIPPED_MODELS = {
    "embedded": "embedded",
    "embedded_iabn": "embedded",
    "embedded_8": "embedded_8_2",
    "fashion_resnet8": "fashionmnistc",
}


def check_combination(cfg: DictConfig) -> None:
    """A norm-only method preset (``method=bn``, ``alpha``, ...) names its norm: pairing it with
    another norm would label unmix results ``bn``. Its own presets (``unmix_imagenet`` for
    ``method=unmix``) are fine."""
    choices = _choices(cfg)
    method, norm = choices["method"], choices["norm"]
    presets = set(list_groups().get("norm", [])) - {"source"}  # method=source: any norm
    if method in presets and not (norm == method or norm.startswith(method + "_")):
        raise ValueError(
            f"method={method} is the norm-only preset of norm={method}, so it cannot run with "
            f"norm={norm}; use method=source norm={norm} for that norm alone"
        )
    trained_on = SHIPPED_MODELS.get(choices["model"])
    if trained_on is not None and choices["dataset"] != trained_on:
        matching = [m for m, d in SHIPPED_MODELS.items() if d == choices["dataset"]]
        warnings.warn(
            f"model={choices['model']} was trained for dataset={trained_on}, not "
            f"dataset={choices['dataset']}: its classes mean something else there"
            + (f"; use model={matching[0]}" if matching else ""),
            stacklevel=2,
        )


def _overrides(cfg: DictConfig) -> list[str]:
    """The command-line overrides of this run (they win over a method's per-dataset table)."""
    if "hydra" in cfg:  # composed with return_hydra_config=True (tests, scripts)
        return list(cfg.hydra.overrides.task)
    if HydraConfig.initialized():
        return list(HydraConfig.get().overrides.task)
    return []


def _meta(cfg: DictConfig, method_defaults: str | None = None) -> dict[str, Any]:
    """The columns every summary row carries, known before anything is built. A stream without
    outliers lists no ``outliers.*`` knobs, as before they existed."""
    outliers = cfg.stream.get("outliers")
    outliers = outliers if isinstance(outliers, Mapping) else {}  # a bad value: the stream says
    quiet = () if outliers.get("ratio", 0) else tuple(f"outliers.{k}" for k in outliers)
    return _choices(cfg) | {
        "seed": cfg.seed,
        "stream_seed": cfg.stream.seed,
        "batch_size": cfg.stream.batch_size,
        "stream_params": _params(cfg.stream, skip=("_target_", "seed", "batch_size", *quiet)),
        "norm_params": _params(cfg.norm, skip=("_target_",)),
        "model_params": _params(cfg.model, skip=("_target_",)),
        "dataset_params": _params(cfg.dataset, skip=("_target_", "name", *NOT_RESULTS_DATASET)),
        "method_params": _params(cfg.method, skip=("_target_",), extra=method_defaults),
        "protocol_params": _params(cfg.protocol, skip=("_target_",)),
        "uses_labels": _uses_labels(cfg.protocol),
        "outlier_score": cfg.get("outlier_score", "entropy"),
        "stream_sha256": "",
        "provenance": "",
        **{key: cfg.get(key, False) for key in EXECUTION},  # checked by run_keys
    }


#: Run keys that choose how the model executes; they may change results in the last digits, so
#: each is a summary column (and part of a sweep's directory name). All off by default.
EXECUTION = ("amp", "channels_last", "compile")


def _uses_labels(node: DictConfig) -> bool:
    """Whether the protocol reads the test labels (known from its class, before building it)."""
    target = str(node.get("_target_", ""))
    try:
        return bool(getattr(get_class(target), "uses_labels", False))
    except Exception:  # noqa: BLE001 (an unknown target fails with a clear error when built)
        return False


def _status(status: str, message: str) -> dict[str, str]:
    return {"status": status, "message": message}


def _failed(run_dir: Path, exc: BaseException) -> dict[str, str]:
    message = f"{type(root_error(exc)).__name__}: {one_line(exc)}"
    (run_dir / "error.txt").write_text(traceback.format_exc())
    log.error("run failed: %s (traceback in %s)", message, run_dir / "error.txt")
    return _status("failed", message)


def _write_summary(
    run_dir: Path, plan: StreamPlan | None, record: StreamRecord, meta: dict[str, Any]
) -> pd.DataFrame:
    """Summarise what ``record`` holds so far (nothing yet: one ``all`` row with n = 0)."""
    domains, group_of = plan.inlier_groups() if plan is not None else ([], np.zeros(0, int))
    summary = summarize(
        [d.corruption for d in domains],
        [d.severity for d in domains],
        group_of[record.cat("sample_domain")],
        record.correct(),
        record.batch_rows,
        record.batch_domains,
        meta,
        record.cat("sample_outlier"),
        record.cat("sample_score"),
    )
    write_csv_atomic(summary, run_dir / "summary.csv")
    return summary


def _write_predictions(run_dir: Path, plan: StreamPlan, record: StreamRecord) -> None:
    domain_ids = record.cat("sample_domain")
    frame = pd.DataFrame(
        {
            "domain": [plan.domains[d].corruption for d in domain_ids],
            "severity": [plan.domains[d].severity for d in domain_ids],
            "outliers": [plan.domains[d].outliers for d in domain_ids],
            "index": record.cat("sample_index"),
            "label": record.cat("sample_label"),
            "pred": record.cat("sample_pred"),
            "score": record.cat("sample_score"),
        }
    )
    write_csv_atomic(frame, run_dir / "predictions.csv")


def _choices(cfg: DictConfig) -> dict[str, str]:
    """The chosen config of each group (``method=bn`` -> ``bn``), stamped on every summary row."""
    if "hydra" in cfg:  # composed with return_hydra_config=True (tests, scripts)
        choices = cfg.hydra.runtime.choices
    elif HydraConfig.initialized():
        choices = HydraConfig.get().runtime.choices
    else:
        choices = {}
    return {part: str(choices.get(part, cfg[part].get("_target_", "?"))) for part in PARTS}


def _params(node: DictConfig, skip: tuple[str, ...], extra: str | None = None) -> str:
    """``key=value;...`` of a config node (resolved; nested nodes as dotted keys, e.g.
    ``optim.lr``), so tables can group by any constant. ``extra``: the per-dataset defaults
    used (``defaults=cifar10c``)."""
    flat = _flat(OmegaConf.to_container(node, resolve=True))
    pairs = [
        f"{k}={v}" for k, v in flat.items() if k not in skip and k.split(".")[-1] != "_partial_"
    ]
    return ";".join(pairs + ([f"defaults={extra}"] if extra else []))


#: Dataset keys that say where images are cached and how many threads decode them, not which.
NOT_RESULTS_DATASET = ("cache_dir", "workers")
#: Run keys that do not change results (also left out of sweep directory names, run.yaml).
NOT_RESULTS = (
    "device",
    "prefetch",
    "progress",
    "resume",
    "save_predictions",
    "threads",
    "ood_root",
)


#: Keys added after results were first written, with the value every older run had: a complete
#: run whose config.yaml lacks them is the same configuration as a new one at these values.
ADDED_KEYS = {
    "protocol._target_": "ttabench.protocols.Online",
    "consistency": False,
    "outlier_score": "entropy",
    "stream.outliers.ratio": 0.0,
    "stream.outliers.source": "embedded_ood",
    "stream.outliers.mix": "interleave",
}


def _check_same_config(run_dir: Path, own: DictConfig) -> None:
    """A complete run directory is only skipped for the configuration that made it: rerunning a
    sweep after a change of defaults or overrides must not return stale results as new ones."""
    path = run_dir / "config.yaml"
    if not path.exists():  # results of an older version: nothing to compare with
        return
    before = _flat(OmegaConf.to_container(OmegaConf.load(path)))
    now = _flat(OmegaConf.to_container(own, resolve=True))
    changed = sorted(
        k
        for k in before.keys() | now.keys()
        if k.split(".")[0] not in NOT_RESULTS
        and not (k.startswith("dataset.") and k[len("dataset.") :] in NOT_RESULTS_DATASET)
        and before.get(k, ADDED_KEYS.get(k)) != now.get(k)
    )
    if changed:
        raise ValueError(
            f"{run_dir} holds complete results of another configuration ({', '.join(changed)} "
            "differ); rerun with resume=false to replace them, or choose another "
            "hydra.run.dir / hydra.sweep.dir"
        )


def _flat(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    out: dict[str, Any] = {}
    for key, sub in tree.items():
        out.update(_flat(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out
