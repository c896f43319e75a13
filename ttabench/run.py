"""``run(cfg)``: build the four parts from a composed config, stream, and write the results.

A plain function: the CLI calls it from the Hydra app, tests call it with a config composed by
``hydra.compose``. Writes into ``run_dir``: ``online.csv``, ``summary.csv``, ``stream.npz`` (the
realised order; its SHA-256 is in ``summary.csv``), ``config.yaml`` and, with
``save_predictions=true``, ``predictions.csv``.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from ttabench.results import OnlineLog, summarize, write_csv_atomic
from ttabench.runner import StreamRecord, run_stream

log = logging.getLogger(__name__)
PARTS = ("model", "dataset", "stream", "norm", "method")


def run(cfg: DictConfig, run_dir: str | Path | None = None) -> pd.DataFrame:
    """Run one benchmark configuration; return its summary table (also in summary.csv).

    A run whose ``summary.csv`` already says ``complete`` is not repeated (``resume=true``);
    an earlier partial ``online.csv`` is kept aside, never overwritten.
    """
    run_dir = Path(run_dir) if run_dir else Path(HydraConfig.get().runtime.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_path = run_dir / "summary.csv"
    if cfg.get("resume", True) and _is_complete(summary_path):
        log.info("%s is complete; skipping (resume=false to rerun)", run_dir)
        return pd.read_csv(summary_path)
    _keep_partial(run_dir)
    own = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])  # hydra's needs HydraConfig
    (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(own, resolve=True))

    device = _device(cfg.get("device", "auto"))
    torch.manual_seed(cfg.seed)
    dataset = instantiate(cfg.dataset)
    plan = instantiate(cfg.stream).build(dataset.domains, dataset.labels)
    plan.save(run_dir)
    meta = _choices(cfg) | {
        "seed": cfg.seed,
        "stream_seed": cfg.stream.seed,
        "batch_size": cfg.stream.batch_size,
        "stream_params": _params(cfg.stream, skip=("_target_", "seed", "batch_size")),
        "norm_params": _params(cfg.norm, skip=("_target_",)),
        "stream_sha256": plan.sha256(),
        "provenance": ";".join(f"{k}={v}" for k, v in dataset.provenance().items()),
    }
    record = StreamRecord()
    online = OnlineLog(run_dir / "online.csv")
    status, message = "complete", ""
    try:
        model = instantiate(cfg.norm).apply(instantiate(cfg.model)).to(device)
        method = instantiate(cfg.method, model=model)
        run_stream(method, dataset, plan, device, online, record, cfg.get("progress", True))
    except KeyboardInterrupt:
        status, message = "incomplete", "interrupted"
        raise
    except Exception as exc:  # recorded, not raised: a sweep goes on with its other runs
        status, message = "failed", f"{type(exc).__name__}: {exc}"
        (run_dir / "error.txt").write_text(traceback.format_exc())
        log.error("run failed: %s (traceback in %s)", message, run_dir / "error.txt")
    finally:
        online.close()
        summary = _write_summary(
            run_dir, plan, record, meta | {"status": status, "message": message}
        )
        if cfg.get("save_predictions", False):
            _write_predictions(run_dir, plan, record)
    log.info("%s: error %.2f%% over %d samples", status, summary.iloc[-1].error, summary.iloc[-1].n)
    return summary


def _write_summary(run_dir: Path, plan, record: StreamRecord, meta: dict[str, Any]) -> pd.DataFrame:
    sample_domain = record.cat("sample_domain")
    correct = record.cat("sample_pred") == record.cat("sample_label")
    summary = summarize(
        [d.corruption for d in plan.domains],
        [d.severity for d in plan.domains],
        sample_domain,
        correct,
        record.batch_rows,
        record.batch_domains,
        meta,
    )
    write_csv_atomic(summary, run_dir / "summary.csv")
    return summary


def _write_predictions(run_dir: Path, plan, record: StreamRecord) -> None:
    domain_ids = record.cat("sample_domain")
    frame = pd.DataFrame(
        {
            "domain": [plan.domains[d].corruption for d in domain_ids],
            "severity": [plan.domains[d].severity for d in domain_ids],
            "index": record.cat("sample_index"),
            "label": record.cat("sample_label"),
            "pred": record.cat("sample_pred"),
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


def _params(node: DictConfig, skip: tuple[str, ...]) -> str:
    """``key=value;...`` of a config node, so tables can group by any constant."""
    return ";".join(f"{k}={v}" for k, v in node.items() if k not in skip)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _is_complete(summary_path: Path) -> bool:
    if not summary_path.exists():
        return False
    status = pd.read_csv(summary_path, usecols=["status"])["status"]
    return bool(len(status)) and bool((status == "complete").all())


def _keep_partial(run_dir: Path) -> None:
    """Move the rows of an earlier unfinished attempt aside instead of overwriting them."""
    online = run_dir / "online.csv"
    if online.exists():
        attempt = 1 + len(list(run_dir.glob("online.attempt*.csv")))
        online.rename(run_dir / f"online.attempt{attempt}.csv")
