"""The shipped ResNet-8 source models: ``model=embedded`` (trained on the synthetic data) and
``model=fashion_resnet8`` (trained on the Fashion-MNIST train split), both made by
``ttabench pretrain``.

The checkpoint's JSON record carries the data it was trained on and its fingerprint; loading a
synthetic-data checkpoint against a different generator is an error (retrain with `ttabench
pretrain`), so the generator and the weights cannot drift apart silently.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from ttabench.data import synthetic
from ttabench.models.small_resnet import SmallResNet
from ttabench.models.wrapper import NormalizedModel
from ttabench.norms.iabn import convert_to_iabn

WEIGHTS = Path(__file__).parent / "weights"
CHECKPOINT = WEIGHTS / "embedded_resnet8.pt"
NORMS = ("bn", "iabn")  # the normalisation layers a checkpoint was trained with
INPUT_MEAN = (0.5, 0.5, 0.5)
INPUT_STD = (0.25, 0.25, 0.25)


def build_net(
    width: int = 1, blocks_per_stage: int = 1, norm: str = "bn", num_classes: int | None = None
) -> SmallResNet:
    """The ResNet-8 with BatchNorm layers, or (``norm="iabn"``) NOTE's IABN layers in their
    place (``model=embedded_iabn``, the twin NOTE's official protocol needs)."""
    net = SmallResNet(num_classes or len(synthetic.CLASSES), width, blocks_per_stage)
    if norm == "iabn":
        convert_to_iabn(net)
    elif norm != "bn":
        raise ValueError(f"norm {norm!r} of the embedded model is unknown; valid: bn, iabn")
    return net


def load_embedded(
    checkpoint: str | Path | None = None, data_seed: int = 0, weights: str = "embedded_resnet8"
) -> NormalizedModel:
    """Build the embedded model and load its shipped (or given) checkpoint.

    Args:
        checkpoint: a checkpoint made by ``ttabench pretrain`` (its JSON record beside it).
        weights: which shipped checkpoint when ``checkpoint`` is None: ``embedded_resnet8``
            (BatchNorm), ``embedded_resnet8_iabn`` (trained with IABN, for NOTE) or
            ``fashion_resnet8`` (Fashion-MNIST).

    Raises:
        FileNotFoundError: the checkpoint or its JSON record is missing.
        ValueError: the checkpoint's SHA-256 or data fingerprint does not match.
    """
    path = Path(checkpoint) if checkpoint else WEIGHTS / f"{weights}.pt"
    record_path = path.with_suffix(".json")
    if not path.is_file() or not record_path.is_file():
        raise FileNotFoundError(
            f"embedded model checkpoint not found: expected {path} and {record_path}; "
            "create them with `ttabench pretrain`"
        )
    record = json.loads(record_path.read_text())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != record["sha256"]:
        raise ValueError(f"{path}: SHA-256 {digest} does not match its record {record['sha256']}")
    expected = synthetic.fingerprint(data_seed)
    if record.get("data", "embedded") == "embedded" and record["dataset_fingerprint"] != expected:
        raise ValueError(
            f"{path} was trained on synthetic data with fingerprint "
            f"{record['dataset_fingerprint'][:12]}..., but the generator now gives "
            f"{expected[:12]}... (ttabench/data/synthetic.py changed). Retrain it with: "
            f"{record['command']}"
        )
    cfg = record["config"]
    net = build_net(
        cfg["width"], cfg["blocks_per_stage"], cfg.get("norm", "bn"), record.get("num_classes")
    )
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return NormalizedModel(net, record["input_mean"], record["input_std"]).eval()
