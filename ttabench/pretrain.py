"""`ttabench pretrain`: train a shipped ResNet-8 source model on a clean train split.

``--data embedded`` (default): the synthetic train split, for ``model=embedded``;
``--data fashion_mnist``: the Fashion-MNIST train split (60,000 images, padded to 32x32 RGB as
the Fashion-MNIST-C reader does; Debian's ``dataset-fashion-mnist`` or ``--root``), for
``model=fashion_resnet8``, the source model of the real-image offline benchmark.

Deterministic (seeded data order and augmentation, deterministic torch algorithms) and short
(minutes on 2 CPU cores). Writes the checkpoint and a JSON record next to it: SHA-256 of the
checkpoint, the exact command and config, the data it was trained on and its fingerprint, and
the clean test accuracy. ``--classes K`` trains and evaluates on the labels < K only (K output
units), the source model of a class split (``--classes 8``: ``model=embedded_8`` for
``dataset=embedded_8_2``, as STAMP's CIFAR-10 classes 0-7 model for cifar10c_8_2).
`ttabench.models.embedded` refuses a synthetic-data checkpoint whose data fingerprint does not
match the current generator.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ttabench.data import synthetic
from ttabench.data.clean import fashion_mnist
from ttabench.models.embedded import (
    INPUT_MEAN,
    INPUT_STD,
    NORMS,
    WEIGHTS,
    build_net,
)
from ttabench.models.wrapper import NormalizedModel
from ttabench.paths import make_dir


@dataclass
class PretrainConfig:
    epochs: int = 8
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 1.0
    data_seed: int = 0
    seed: int = 0
    width: int = 1
    blocks_per_stage: int = 1
    norm: str = "bn"  # bn | iabn: NOTE's instance-aware BN during training (its official models)
    data: str = "embedded"  # embedded | fashion_mnist: the clean train split
    classes: int | None = None  # K: train and evaluate on the labels < K only (None: all)


#: --data -> shipped checkpoint name ({norm}: "" or "_iabn"; {classes}: "" or "_c<K>")
DEFAULT_OUT = {
    "embedded": "embedded_resnet8{norm}{classes}.pt",
    "fashion_mnist": "fashion_resnet8{norm}{classes}.pt",
}

#: Smallest valid value of each numeric knob (a zero-epoch run would overwrite the weights
#: with an untrained model).
MINIMUM = {"epochs": 1, "batch_size": 1, "lr": 0.0, "momentum": 0.0, "weight_decay": 0.0,
           "warmup_epochs": 0.0, "data_seed": 0, "seed": 0, "width": 1,
           "blocks_per_stage": 1}  # fmt: skip


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random 2-px translation (reflect padding) and horizontal flip, per image."""
    b = x.shape[0]
    padded = F.pad(x, (2, 2, 2, 2), mode="reflect")
    dx = torch.randint(0, 5, (b,), generator=gen)
    dy = torch.randint(0, 5, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(32)[None]).view(b, 1, 32, 1).expand(b, 3, 32, 36)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(32)[None]).view(b, 1, 1, 32).expand(b, 3, 32, 32)
    out = out.gather(3, cols)
    flip = torch.rand(b, generator=gen) < 0.5
    return torch.where(flip.view(b, 1, 1, 1), out.flip(3), out)


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy with running BN statistics (eval mode)."""
    model.eval()
    correct = 0
    for i in range(0, len(images), 1000):
        logits = model(images[i : i + 1000].float() / 255)
        correct += (logits.argmax(1) == labels[i : i + 1000]).sum().item()
    return correct / len(images)


def splits(data: str, data_seed: int = 0, root=None) -> tuple[tuple, tuple, str]:
    """``(train images, labels), (test images, labels), data fingerprint`` of ``data``:
    uint8 (N, 3, 32, 32) and int64 tensors."""
    if data == "embedded":
        train_split = synthetic.generate("train", data_seed)
        test_split = synthetic.generate("test", data_seed)
        fingerprint = synthetic.fingerprint(data_seed)
    else:
        *train_split, fingerprint = fashion_mnist(root, "train")
        *test_split, _ = fashion_mnist(root, "test")
    as_tensors = tuple(
        tuple(torch.from_numpy(a) for a in split) for split in (train_split, test_split)
    )
    return as_tensors[0], as_tensors[1], fingerprint


def keep_classes(split: tuple[torch.Tensor, torch.Tensor], classes: int | None) -> tuple:
    """``(images, labels)`` of the samples whose label is < ``classes`` (all for None), in
    order: the ID part of a class split (STAMP trains its cifar10c_8_2 model on classes 0-7)."""
    if classes is None:
        return split
    keep = split[1] < classes
    return split[0][keep], split[1][keep]


def train(cfg: PretrainConfig, root=None, data=None) -> tuple[NormalizedModel, float, float]:
    """Train from scratch; return the model, its clean test accuracy and the seconds taken.
    ``data``: the ``splits`` already read (else they are read here)."""
    torch.manual_seed(cfg.seed)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    train_split, test_split, _ = data or splits(cfg.data, cfg.data_seed, root)
    x_train, y_train = keep_classes(train_split, cfg.classes)
    x_test, y_test = keep_classes(test_split, cfg.classes)
    num_classes = cfg.classes or int(y_train.max()) + 1
    net = build_net(cfg.width, cfg.blocks_per_stage, cfg.norm, num_classes)
    model = NormalizedModel(net, INPUT_MEAN, INPUT_STD)
    opt = torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr,
        momentum=cfg.momentum,
        nesterov=True,
        weight_decay=cfg.weight_decay,
    )
    steps_per_epoch = math.ceil(len(x_train) / cfg.batch_size)
    total, warmup = cfg.epochs * steps_per_epoch, cfg.warmup_epochs * steps_per_epoch

    def lr_at(step: int) -> float:  # linear warm-up, then cosine decay to zero
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(total=total, desc="pretrain", unit="batch", mininterval=1.0)
    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            x = _augment(x_train[idx].float() / 255, gen)
            loss = F.cross_entropy(model(x), y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    acc = evaluate(model, x_test, y_test)
    return model, acc, time.perf_counter() - start


def save(
    model: NormalizedModel,
    cfg: PretrainConfig,
    acc: float,
    seconds: float,
    out: Path,
    argv: list[str] | None = None,
    fingerprint: str | None = None,
) -> dict:
    """Write the checkpoint (network state dict only) and its JSON record, whose ``command``
    is ``ttabench pretrain`` with ``argv`` (the arguments that made it); ``fingerprint``: of
    the files trained on (default: the synthetic generator's)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.net.state_dict(), out)
    record = {
        "sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "command": " ".join(["ttabench pretrain", shlex.join(argv or [])]).strip(),
        "config": asdict(cfg),
        "data": cfg.data,
        "num_classes": model.net.fc.out_features,
        "dataset_fingerprint": fingerprint or synthetic.fingerprint(cfg.data_seed),
        "clean_test_accuracy": round(acc, 4),
        "train_seconds": round(seconds, 1),
        "torch_version": torch.__version__,
        "input_mean": list(INPUT_MEAN),
        "input_std": list(INPUT_STD),
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ttabench pretrain",
        description="Train a ResNet-8 source model on a clean train split (--data).",
    )
    defaults = PretrainConfig()
    for name, value in asdict(defaults).items():
        choices = {"norm": NORMS, "data": tuple(DEFAULT_OUT)}.get(name)
        kind = int if value is None else type(value)  # --classes: an int, default None
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, default=value, choices=choices
        )
    parser.add_argument(
        "--out",
        type=Path,
        help="checkpoint path [the shipped one of --data, --norm and --classes: weights/"
        "embedded_resnet8(_iabn)(_c<K>).pt, weights/fashion_resnet8.pt]",
    )
    parser.add_argument(
        "--root", help="--data fashion_mnist: data root [$TTA_DATA_ROOT, then Debian's folder]"
    )
    args = vars(parser.parse_args(argv))
    out, root = args.pop("out"), args.pop("root")
    cfg = PretrainConfig(**args)
    suffix = {"norm": "" if cfg.norm == "bn" else "_iabn", "classes": ""}
    if cfg.classes is not None:
        suffix["classes"] = f"_c{cfg.classes}"
    out = out or WEIGHTS / DEFAULT_OUT[cfg.data].format(**suffix)
    try:
        for name, low in MINIMUM.items():
            if getattr(cfg, name) < low:
                raise ValueError(
                    f"--{name.replace('_', '-')} must be >= {low}, not {getattr(cfg, name)}"
                )
        if cfg.classes is not None and cfg.classes < 2:
            raise ValueError(f"--classes must be >= 2, not {cfg.classes}")
        make_dir(Path(out).parent, "--out")
        data = splits(cfg.data, cfg.data_seed, root)  # found and readable before training
        labels = int(data[0][1].max()) + 1
        if cfg.classes is not None and cfg.classes >= labels:
            raise ValueError(f"--classes must be < {labels} (the classes of --data {cfg.data})")
    except (ValueError, OSError, EOFError) as exc:  # before minutes of training are spent
        parser.exit(2, f"ttabench pretrain: error: {exc}\n")
    model, acc, seconds = train(cfg, root, data)
    record = save(model, cfg, acc, seconds, out, argv, data[2])
    print(json.dumps(record, indent=2))
    return 0
