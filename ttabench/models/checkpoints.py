"""Finding and loading source-model weights with no network access.

Search order (the first existing file wins; nothing is ever downloaded):
1. ``model.checkpoint``, an explicit file (an error if it does not exist);
2. the RobustBench cache layout ``{dir}/{dataset}/corruptions/{name}.pt`` (RobustBench's
   ``utils.load_model``) for ``dir`` in ``model.model_dir``, ``$TTA_MODEL_DIR``, ``./models``
   (RobustBench's default) and ``./ckpt`` (Tent's and CoTTA's);
3. library caches: the torch hub cache ``$TORCH_HOME/hub/checkpoints/<file name of the URL>``
   (where torchvision and timm keep downloaded weights) and the Hugging Face cache (timm's hub
   weights), read with ``huggingface_hub.try_to_load_from_cache``, a file-system-only lookup.

Missing weights raise one error listing every place searched; random weights only come from an
explicit ``model.pretrained=false``. Files are read with ``torch.load(weights_only=True)`` (or
safetensors); ``{'state_dict': ...}`` / ``{'model': ...}`` wrappers are unwrapped and
``module.`` / ``model.`` key prefixes stripped, as RobustBench does; keys must then match the
network exactly, except for keys a model declares optional (the AugMix ResNeXt's ``mu``/``sigma``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

MODEL_DIR_ENV = "TTA_MODEL_DIR"
THREAT_MODEL = "corruptions"  # RobustBench's threat-model folder for common-corruption models
UNWRAP_KEYS = ("state_dict", "model")  # RobustBench/torch training loops, DeiT/timm training
STRIP_PREFIXES = ("module.", "model.")  # DataParallel; RobustBench's normalising wrappers


class MissingCheckpointError(FileNotFoundError):
    """No weights file in any searched place; the message lists them all."""


class CheckpointMismatchError(ValueError):
    """A weights file whose keys or shapes do not match the network."""


@dataclass(frozen=True)
class Candidate:
    """A place a weights file may be, and why it is searched there."""

    path: Path
    origin: str


def model_dirs(model_dir: str | Path | None = None) -> list[tuple[Path, str]]:
    """The model directories searched in order (duplicates removed), with their origin."""
    dirs = [
        (model_dir, "model.model_dir"),
        (os.environ.get(MODEL_DIR_ENV) or None, f"${MODEL_DIR_ENV}"),
        ("models", "./models, RobustBench's default model_dir"),
        ("ckpt", "./ckpt, Tent's and CoTTA's model_dir"),
    ]
    seen, out = set(), []
    for folder, origin in dirs:
        if folder is None:
            continue
        path = Path(folder).expanduser().absolute()
        if path not in seen:
            seen.add(path)
            out.append((path, origin))
    return out


def robustbench_candidates(
    dataset: str, name: str, model_dir: str | Path | None = None
) -> list[Candidate]:
    """``{dir}/{dataset}/corruptions/{name}.pt`` for every model directory."""
    return [
        Candidate(folder / dataset / THREAT_MODEL / f"{name}.pt", origin)
        for folder, origin in model_dirs(model_dir)
    ]


def torch_hub_candidate(url: str) -> Candidate:
    """Where ``torch.hub.load_state_dict_from_url(url)`` keeps its download."""
    filename = os.path.basename(urlparse(url).path)
    hub = Path(torch.hub.get_dir())  # $TORCH_HOME/hub, default ~/.cache/torch/hub
    return Candidate(hub / "checkpoints" / filename, "torch hub cache ($TORCH_HOME/hub)")


def hf_cache_candidates(hf_hub_id: str, filenames: Iterable[str]) -> list[Candidate]:
    """Files of a Hugging Face model repo in the local HF cache (no network is touched)."""
    from huggingface_hub import constants, try_to_load_from_cache
    from huggingface_hub.file_download import repo_folder_name

    repo_id, _, revision = hf_hub_id.partition("@")
    origin = "Hugging Face cache ($HF_HOME/hub)"
    repo_cache = Path(constants.HF_HUB_CACHE) / repo_folder_name(repo_id=repo_id, repo_type="model")
    out = []
    for filename in filenames:
        found = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        path = Path(found) if isinstance(found, str) else None
        out.append(
            Candidate(path or repo_cache / "snapshots" / (revision or "*") / filename, origin)
        )
    return out


def resolve_checkpoint(
    what: str,
    candidates: list[Candidate],
    checkpoint: str | Path | None = None,
    pretrained: bool = True,
    hint: str = "",
) -> Path | None:
    """The weights file to load, or None for a random initialisation (``pretrained=False``).

    Raises:
        MissingCheckpointError: the explicit checkpoint, or every candidate, is missing.
        ValueError: an explicit checkpoint together with ``pretrained=False``.
    """
    if not pretrained:
        if checkpoint:
            raise ValueError(f"{what}: model.checkpoint={checkpoint} but model.pretrained=false")
        return None
    if checkpoint:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise MissingCheckpointError(
                f"{what}: model.checkpoint={path} does not exist (absolute: {path.absolute()})"
            )
        return path
    for candidate in candidates:
        if candidate.path.is_file():
            return candidate.path
    searched = "\n".join(
        f"  {i}. {c.path}  [{c.origin}]" for i, c in enumerate(candidates, start=1)
    )
    raise MissingCheckpointError(
        f"no weights for {what}; searched, in order:\n{searched}\n"
        "Put the file at one of these paths, pass model.checkpoint=/path/to/file, or set "
        "model.pretrained=false for a random initialisation." + (f"\n{hint}" if hint else "")
    )


def verify_sha256(path: str | Path, expected: str | None) -> None:
    """Check a file's SHA-256 against ``expected`` (full hex digest, or a prefix of >= 8 digits,
    as in torch hub file names like ``resnet50-0676ba61.pth``); None skips the check.

    Raises:
        ValueError: the digest differs, or ``expected`` is not a usable hex string.
    """
    if not expected:
        return
    expected = expected.strip().lower()
    if len(expected) < 8 or any(ch not in "0123456789abcdef" for ch in expected):
        raise ValueError(f"model.sha256={expected!r} is not a hex SHA-256 (or a prefix of >= 8)")
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    if not digest.hexdigest().startswith(expected):
        raise ValueError(
            f"{path}: SHA-256 {digest.hexdigest()} does not match model.sha256={expected}"
        )


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a weights file (``.safetensors`` or a torch file, ``weights_only=True``), cleaned.

    Raises:
        ValueError: the file is not a plain tensor state dict.
    """
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return clean_state_dict(load_file(str(path), device="cpu"), path)
    try:
        with torch.serialization.safe_globals(_data_only_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (
        pickle.UnpicklingError,
        RuntimeError,
        EOFError,
        IndexError,
        KeyError,
        ValueError,
    ) as exc:
        with open(path, "rb") as f:
            head = f.read(64).lstrip().lower()
        why = (
            "it is an HTML page, not a checkpoint (a failed Google-Drive download?)"
            if head.startswith((b"<", b"<!doctype"))
            else f"torch.load(weights_only=True) refused it ({exc}). If the file is trusted, "
            "load it once with weights_only=False and torch.save only its state dict"
        )
        raise ValueError(f"cannot read {path}: {why}") from exc
    return clean_state_dict(obj, path)


def _data_only_globals() -> list:
    """Data-only types that training checkpoints keep next to the weights (argparse arguments,
    numpy metrics), allowed so such files still load with ``weights_only=True`` (timm allows
    ``argparse.Namespace`` the same way). Code objects stay refused."""
    import argparse

    import numpy as np

    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    out: list = [argparse.Namespace, np.ndarray, np.dtype, multiarray.scalar]
    out += [multiarray._reconstruct]
    # Files pickled under numpy 1 name these numpy.core.*; numpy 2 moved them to numpy._core.
    out += [(multiarray.scalar, "numpy.core.multiarray.scalar")]
    out += [(multiarray._reconstruct, "numpy.core.multiarray._reconstruct")]
    return out + [getattr(np.dtypes, name) for name in getattr(np.dtypes, "__all__", ())]


def clean_state_dict(obj: object, source: str | Path = "checkpoint") -> dict[str, torch.Tensor]:
    """Unwrap ``{'state_dict': ...}`` / ``{'model': ...}`` and strip ``module.``/``model.``.

    Prefixes are stripped per key, ``module.`` before ``model.``, as RobustBench's loader does.

    Raises:
        ValueError: what remains is not a mapping of names to tensors.
    """
    unwrapping = True
    while unwrapping and isinstance(obj, Mapping):
        unwrapping = False
        for key in UNWRAP_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj, unwrapping = obj[key], True
                break
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(f"{source}: expected a state dict, got {type(obj).__name__}")
    others = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if others:
        raise ValueError(f"{source}: not a state dict; non-tensor entries {others[:5]}")
    out = {}
    for key, value in obj.items():
        for prefix in STRIP_PREFIXES:
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def load_strict(
    net: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str | Path = "checkpoint",
    optional: Iterable[str] = (),
) -> None:
    """Load with exact key and shape matching; only keys in ``optional`` may be missing.

    Raises:
        CheckpointMismatchError: missing, unexpected or wrongly shaped keys, all named.
    """
    own = net.state_dict()
    problems = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in state_dict.items()
        if k in own and v.shape != own[k].shape
    ]
    if not problems:  # shapes first: load_state_dict raises on them even with strict=False
        result = net.load_state_dict(dict(state_dict), strict=False)
        # BatchNorm fills num_batches_tracked itself for old (pre-0.4.1) checkpoints.
        missing = [k for k in result.missing_keys if k not in set(optional)]
        problems = [f"missing key {k}" for k in missing]
        problems += [f"unexpected key {k}" for k in result.unexpected_keys]
    if problems:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CheckpointMismatchError(
            f"{source} does not match {type(net).__name__} ({len(problems)} problem(s)):\n"
            f"  {shown}{more}"
        )


def load_weights(
    net: nn.Module, path: str | Path, sha256: str | None = None, optional: Iterable[str] = ()
) -> None:
    """Verify (optional SHA-256), read and strictly load a weights file into ``net``."""
    verify_sha256(path, sha256)
    load_strict(net, read_state_dict(path), path, optional)
