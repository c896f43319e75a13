"""The run-level keys of ``run.yaml`` (seeds, device, threads, switches), checked in one place.

Hydra passes whatever was typed: ``threads=0``, ``resume=maybe`` or ``seed=abc`` arrive as
values of the wrong kind, and used to be taken silently (``maybe`` is truthy) or to fail deep
inside torch with a message that named no key. :func:`run_keys` checks every key before the run
touches anything and says, for the first bad one, the key, the value and what it takes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig

from ttabench.methods.base import OUTLIER_SCORES


@dataclass(frozen=True)
class RunKeys:
    seed: int
    stream_seed: int
    device: torch.device
    threads: int | None
    prefetch: int | None
    resume: bool
    save_predictions: bool
    progress: bool
    amp: bool
    channels_last: bool
    compile: bool
    consistency: bool
    outlier_score: str
    ood_root: str | None


def run_keys(cfg: DictConfig) -> RunKeys:
    """The run keys of ``cfg``, checked; a ValueError names the first bad one."""
    return RunKeys(
        seed=_integer(cfg, "seed", 1),
        stream_seed=_integer(cfg, "stream_seed", _integer(cfg, "seed", 1)),
        device=resolve_device(cfg.get("device", "auto")),
        threads=_count(cfg, "threads", minimum=1),
        prefetch=_count(cfg, "prefetch", minimum=0),
        resume=flag(cfg, "resume", True),
        save_predictions=flag(cfg, "save_predictions", False),
        progress=flag(cfg, "progress", True),
        amp=flag(cfg, "amp", False),
        channels_last=flag(cfg, "channels_last", False),
        compile=flag(cfg, "compile", False),
        consistency=flag(cfg, "consistency", False),
        outlier_score=_choice(cfg, "outlier_score", OUTLIER_SCORES),
        ood_root=_path(cfg, "ood_root"),
    )


def _choice(cfg: DictConfig, key: str, valid: tuple[str, ...]) -> str:
    value = cfg.get(key, valid[0])
    if value not in valid:
        raise ValueError(f"{key}={value!r}; valid: {', '.join(valid)}")
    return str(value)


def _path(cfg: DictConfig, key: str) -> str | None:
    value = cfg.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a path (or null), not {value!r}")
    return value


def flag(cfg: DictConfig, key: str, default: bool = False) -> bool:
    """A boolean run key, refused unless it is one (``amp=maybe`` is not silently true)."""
    value = cfg.get(key, default)
    if not isinstance(value, bool):
        raise ValueError(f"{key} must be true or false, not {value!r}")
    return value


def resolve_device(name: Any) -> torch.device:
    """``auto`` (CUDA if available), or a torch device string that exists on this machine."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(str(name))
    except (RuntimeError, ValueError):
        raise ValueError(
            f"device must be auto, cpu, cuda or cuda:N (a torch device), not {name!r}"
        ) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ValueError(
                f"device={name} but this machine has {count} CUDA device(s); use device=cpu "
                "or device=auto"
            )
    return device


def _integer(cfg: DictConfig, key: str, default: int) -> int:
    value = cfg.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{key} must be an integer, not {value!r}")
    return value


def _count(cfg: DictConfig, key: str, minimum: int) -> int | None:
    value = cfg.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{key} must be an integer >= {minimum} or null, not {value!r}")
    return value
