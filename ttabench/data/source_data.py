"""Clean source (training) samples for methods that need them, e.g. EATA's Fisher information.

The Doebler/Marsden benchmark draws ``SOURCE.NUM_SAMPLES`` random images of the source training
split (``get_source_loader(train_split=True)``); EATA's own script uses the ImageNet validation
split. Which clean set belongs to a benchmark is known from the dataset's name:

| dataset | source samples | found under ``source_data`` (or ``dataset.root`` / $TTA_DATA_ROOT) |
|---|---|---|
| embedded | the synthetic train split (30,000, generated) | - |
| cifar10c | CIFAR-10 train | ``cifar-10-batches-py/data_batch_1..5`` |
| cifar100c | CIFAR-100 train | ``cifar-100-python/train`` |
| imagenetc | ImageNet train | ``train/{wnid}/*.JPEG`` (``source_data=<root>/val``: EATA's) |
| fashionmnistc | Fashion-MNIST train | ``fashion-mnist/train-images-idx3-ubyte[.gz]``, Debian's |

Samples are drawn without replacement by a generator of ``(seed, n)``, so a method's source
statistics are reproducible, and only the drawn images are decoded. The provider is lazy: a run
whose method needs no source data never looks for it.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ttabench.data import synthetic
from ttabench.data.cifar_pickle import load_cifar_pickle
from ttabench.data.clean import fashion_mnist, preprocess_imagenet
from ttabench.data.folder_c import list_samples, list_wnids
from ttabench.data.roots import data_root

SourceData = Callable[[int], tuple[torch.Tensor, torch.Tensor]]
KEY = "source_data"
LAYOUTS = {
    "cifar10c": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)]),
    "cifar100c": ("cifar-100-python", ["train"]),
    "imagenetc": ("train", []),
}


def source_data_provider(
    dataset: str, root: str | os.PathLike | None, data_seed: int = 0, seed: int = 0
) -> SourceData:
    """``provider(n)`` -> (uint8 images (n, 3, H, W), int64 labels (n,)) of ``dataset``'s clean
    source set; an unknown dataset or missing files raise when it is called, naming the key."""

    def provide(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(np.random.SeedSequence([seed, int(n), 0x5EED]))
        if dataset in ("embedded", "fashionmnistc"):  # whole split in memory
            images, labels = _in_memory_train(dataset, root, data_seed)
            pick = _pick(rng, len(labels), n)
            return torch.from_numpy(images[pick]), torch.from_numpy(labels[pick])
        if dataset not in LAYOUTS:
            raise ValueError(
                f"dataset={dataset} has no clean source split that ttabench can read; methods "
                f"that need source samples run on: embedded, fashionmnistc, {', '.join(LAYOUTS)}"
            )
        images, labels = _read(dataset, _folder(dataset, root), rng, n)
        return torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)

    return provide


@functools.lru_cache(maxsize=1)
def _in_memory_train(dataset: str, root, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The synthetic train split (30,000 images, ~10 s to render) or Fashion-MNIST's (60,000,
    ~1 s to read): once per process."""
    if dataset == "embedded":
        return synthetic.generate("train", seed)
    try:
        images, labels, _ = fashion_mnist(root, "train")
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{KEY}: this method needs clean source samples; {exc}") from None
    return images, labels


def _pick(rng: np.random.Generator, available: int, n: int) -> np.ndarray:
    if n > available:
        raise ValueError(f"{KEY}: {n} source samples asked for, only {available} exist")
    return np.sort(rng.choice(available, size=n, replace=False))


def _folder(dataset: str, root: str | os.PathLike | None) -> Path:
    sub, files = LAYOUTS[dataset]
    base = data_root(root)
    candidates = [base / sub, base] if base else []
    for folder in candidates:
        markers = [folder / f for f in files] or [folder]
        if all(p.exists() or p.with_name(p.name + ".gz").exists() for p in markers) and (
            files or list_wnids(folder)
        ):
            return folder
    layout = f"<{KEY}>/{sub}/" + (", ".join(files) if files else "{wnid}/*.JPEG")
    where = f"looked in {', '.join(map(str, candidates))}" if candidates else "no root set"
    raise FileNotFoundError(
        f"dataset={dataset}: this method needs clean source samples, expected at {layout} "
        f"({where}). Set {KEY}=/path/to/clean/data (default: dataset.root or $TTA_DATA_ROOT)"
    )


def _read(
    dataset: str, folder: Path, rng: np.random.Generator, n: int
) -> tuple[np.ndarray, np.ndarray]:
    if dataset in ("cifar10c", "cifar100c"):
        key = "labels" if dataset == "cifar10c" else "fine_labels"
        data, labels = [], []
        for name in LAYOUTS[dataset][1]:
            entry = load_cifar_pickle(folder / name)  # runs no code from the file
            data.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.append(np.asarray(entry[key], dtype=np.int64))
        images, all_labels = np.concatenate(data), np.concatenate(labels)
        pick = _pick(rng, len(all_labels), n)
        return images[pick], all_labels[pick]
    wnids = list_wnids(folder)
    samples = list_samples(folder, wnids)
    pick = _pick(rng, len(samples), n)
    classes = {w: i for i, w in enumerate(wnids)}
    labels = np.array([classes[samples[i].split("/")[0]] for i in pick], dtype=np.int64)
    return np.stack([preprocess_imagenet(folder / samples[i]) for i in pick]), labels
