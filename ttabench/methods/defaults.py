"""Per-dataset official defaults of a method, and the checks on its knobs before any work.

A method's YAML holds the values for the embedded benchmark at its top level and the official
values of other datasets under ``per_dataset``, keyed by ``dataset.name``::

    optim: {_target_: torch.optim.Adam, _partial_: true, lr: 1.0e-3}
    per_dataset:
      imagenetc: {optim: {_target_: torch.optim.SGD, _partial_: true, lr: 2.5e-4, momentum: 0.9}}

:func:`apply_dataset_defaults` replaces each top-level key named by the entry of the dataset in
use (a whole node: Adam's ``betas`` do not leak into SGD), then re-applies what the user set on
the command line (``method.optim.lr=...`` wins over every table), drops the table and records
which entry was used in ``method.defaults``. The resolved node is what ``config.yaml`` and
``method_params`` show, so every result says which values it ran with.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Sequence

import torch
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

TABLE = "per_dataset"
log = logging.getLogger(__name__)


def apply_dataset_defaults(cfg: DictConfig, overrides: Sequence[str]) -> str | None:
    """Resolve ``cfg.method`` for ``cfg.dataset.name`` in place (see the module docstring);
    return the name of the defaults used (None for a method without a table)."""
    method = cfg.method
    table = method.get(TABLE)
    if table is None:
        check_optimizer(method.get("optim"))
        return None
    with open_dict(method):
        name = str(cfg.dataset.get("name", ""))
        entry = table.get(name)
        keys, deleted = _override_keys(overrides)
        kept = {k: OmegaConf.select(cfg, k) for k in keys if k != f"method.{TABLE}"}
        for key, value in (entry or {}).items():
            method[key] = value
        for key, value in kept.items():
            OmegaConf.update(cfg, key, value, merge=False, force_add=True)
        for key in deleted:  # ~method.optim.betas: gone from the table's node too
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(cfg, parent)
            if isinstance(node, DictConfig) and leaf in node:
                del node[leaf]
        del method[TABLE]
    check_optimizer(method.get("optim"))
    if entry is None and not name.startswith("embedded"):  # embedded_8_2: the same benchmark
        log.warning(
            "no official defaults of this method for dataset=%s: using the embedded "
            "benchmark's (the method YAML's top level)",
            name,
        )
        return "embedded"
    return name


def check_optimizer(optim: DictConfig | None) -> None:
    """``method.optim._target_`` must name a torch optimizer class: a clear line, listing the
    valid ones, instead of Hydra's import traceback."""
    if optim is None:
        return
    if not isinstance(optim, DictConfig):
        raise ValueError(
            f"method.optim must be a node like {{_target_: torch.optim.Adam, _partial_: true, "
            f"lr: 1e-3}}, got {optim!r}"
        )
    lr = optim.get("lr", 0.0)
    if isinstance(lr, bool) or not isinstance(lr, int | float):
        raise ValueError(f"method.optim.lr must be a number, got {lr!r}")
    target = str(optim.get("_target_", ""))
    module, _, name = target.rpartition(".")
    try:
        found = getattr(importlib.import_module(module), name) if module else None
    except (ImportError, AttributeError):
        found = None
    if not (inspect.isclass(found) and issubclass(found, torch.optim.Optimizer)):
        valid = sorted(
            n
            for n, c in vars(torch.optim).items()
            if inspect.isclass(c)
            and issubclass(c, torch.optim.Optimizer)
            and c is not torch.optim.Optimizer
        )
        raise ValueError(
            f"method.optim._target_={target!r} is not a torch optimizer; valid: "
            + ", ".join(f"torch.optim.{n}" for n in valid)
        )
    if not optim.get("_partial_", False):
        raise ValueError("method.optim needs _partial_: true (the method passes the parameters)")


def _override_keys(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """The ``method.*`` keys set and deleted (``~key``) on the command line."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    method = [o for o in parsed if o.key_or_group.startswith("method.")]
    return (
        [o.key_or_group for o in method if not o.is_delete()],
        [o.key_or_group for o in method if o.is_delete()],
    )
