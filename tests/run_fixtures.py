"""Synthetic run directories (summary.csv, online.csv) with the real columns, for compare/plot.

Errors are given per domain; every other column is filled the way ``run(cfg)`` fills it, so the
table and plot code sees what a real sweep leaves behind without running a model.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from ttabench.results import ONLINE_COLUMNS

DOMAINS = ("contrast", "gaussian_noise", "fog")  # deliberately not in canonical order
STREAM_PARAMS = "domains={domains};labels={labels};n_samples=None;delta={delta};min_chunk=10"


def write_run(
    root: Path,
    *,
    method: str = "bn",
    stream: str = "iid",
    seed: int = 1,
    stream_seed: int | None = None,
    errors: dict[str, float] | None = None,
    delta: float = 0.1,
    batch_size: int = 64,
    sha: str | None = None,
    status: str = "complete",
    n: int = 256,
    online: bool = False,
    model_params: str = "checkpoint=None;pretrained=True",
    norm: str | None = None,
    method_params: str = "",
    extra: dict | None = None,
) -> Path:
    """One run directory under ``root``; returns it. ``errors``: domain -> error %; ``extra``:
    more summary columns (criteria, protocol) on every row."""
    stream_seed = seed if stream_seed is None else stream_seed
    errors = errors or {d: 10.0 + i for i, d in enumerate(DOMAINS)}
    name = f"method={method},seed={seed},stream={stream},delta={delta},bs={batch_size}"
    tag = zlib.crc32((model_params + method_params).encode())
    run_dir = root / f"{name},ss={stream_seed},m={tag}"
    run_dir.mkdir(parents=True)
    meta = {
        "nonfinite": 0,
        "model": "embedded",
        "dataset": "embedded",
        "stream": stream,
        "norm": norm or method,
        "method": method,
        "seed": seed,
        "stream_seed": stream_seed,
        "batch_size": batch_size,
        "stream_params": STREAM_PARAMS.format(
            domains="single", labels="dirichlet" if "dirichlet" in stream else "iid", delta=delta
        ),
        "norm_params": f"seed={seed};batch_size={batch_size}" if method == "unmix" else "",
        "model_params": model_params,
        "method_params": method_params,
        "stream_sha256": sha or f"sha-{stream}-{delta}-{batch_size}-{stream_seed}",
        "provenance": "source=embedded;seed=0",
        "status": status,
        "message": "" if status == "complete" else "boom",
    }
    rows = [
        {"domain": d, "severity": 5, "n": n, "correct": round(n * (1 - e / 100)), "error": e}
        for d, e in errors.items()
    ]
    total = sum(r["n"] for r in rows)
    correct = sum(r["correct"] for r in rows)
    rows.append(
        {
            "domain": "all",
            "severity": 5,
            "n": total,
            "correct": correct,
            "error": float(np.mean(list(errors.values()))),
        }
    )
    stats = {"n_classes": 10, "majority_frac": 0.2, "label_entropy": 2.2}
    rows = [r | stats | meta | (extra or {}) for r in rows]
    pd.DataFrame(rows).to_csv(run_dir / "summary.csv", index=False)
    if online:
        write_online(run_dir, errors, n, batch_size, seed)
    return run_dir


def write_online(run_dir: Path, errors: dict[str, float], n: int, batch_size: int, seed: int):
    """online.csv whose batch accuracies match ``errors`` domain by domain (one visit each)."""
    rng = np.random.default_rng(seed)
    rows, hits, seen = [], 0, 0
    for domain, error in errors.items():
        for start in range(0, n, batch_size):
            size = min(batch_size, n - start)
            correct = int(rng.binomial(size, 1 - error / 100))
            hits, seen = hits + correct, seen + size
            rows.append(
                {
                    "step": len(rows),
                    "domain": domain,
                    "severity": 5,
                    "n": size,
                    "correct": correct,
                    "batch_acc": correct / size,
                    "cum_acc": hits / seen,
                    "n_classes": 10,
                    "majority_frac": 0.2,
                    "label_entropy": 2.2,
                    "nonfinite": 0,
                    "seconds": 0.01,
                }
            )
    pd.DataFrame(rows, columns=list(ONLINE_COLUMNS)).to_csv(run_dir / "online.csv", index=False)
