"""Clean test sets that corruption benchmarks are generated from, read from their on-disk formats.

Sources (shared/specs/corruptions-and-models.md, sections 1.5 and 5): CIFAR-10 / CIFAR-100 in
torchvision's pickle layout (``cifar-10-batches-py/test_batch``, ``cifar-100-python/test``),
ImageNet validation images in class folders (``val/{wnid}/*.JPEG``, preprocessed as
``make_imagenet_c.py`` does: PIL bilinear ``Resize(256)`` + ``CenterCrop(224)``), Fashion-MNIST
in the idx format of Debian's ``dataset-fashion-mnist`` or torchvision's ``raw`` folder (28x28
grey, zero-padded to 32x32 and replicated to RGB so the CIFAR profile and 32 px models apply),
and the embedded synthetic test split. Nothing is downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torchvision.transforms.functional as TF
from PIL import Image
from torchvision.transforms import InterpolationMode

from ttabench.data import synthetic
from ttabench.data.cifar_pickle import RefusedPickleError, load_cifar_pickle
from ttabench.data.folder_c import list_samples, list_wnids, read_id_list, select_samples
from ttabench.data.roots import check_n, find_dir, fingerprint_files

#: source -> (corruption profile, image size)
CLEAN_SOURCES: dict[str, tuple[str, int]] = {
    "cifar10": ("cifar", 32),
    "cifar100": ("cifar", 32),
    "fashion_mnist": ("cifar", 32),
    "embedded": ("cifar", 32),
    "imagenet": ("imagenet", 224),
}
_WNID = re.compile(r"^n\d{8}$")
_DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")


@dataclass
class CleanSet:
    """A clean test set: labels in memory, images loaded on demand.

    Attributes:
        name: Source name (a key of :data:`CLEAN_SOURCES`).
        num_classes: Number of classes.
        labels: int64 (N,) labels of the selected samples.
        index: int64 (N,) position of each sample in the *full* clean set; corruption noise is
            seeded by it, so a sample is corrupted identically in every subset.
        ids: Per-sample relative file names for folder layouts (``wnid/file.JPEG``), else None.
        wnids: Sorted class folders (folder sources), else None.
        fingerprint: Content fingerprint of the files read (or of the generator).
        load: ``load(positions)``: uint8 (n, 3, H, W) images at positions of this subset.
    """

    name: str
    num_classes: int
    labels: np.ndarray
    index: np.ndarray
    fingerprint: str
    load: Callable[[np.ndarray], np.ndarray] = field(repr=False)
    ids: list[str] | None = None
    wnids: list[str] | None = None

    @property
    def profile(self) -> str:
        return CLEAN_SOURCES[self.name][0]

    @property
    def image_size(self) -> int:
        return CLEAN_SOURCES[self.name][1]

    def images(self, positions: np.ndarray) -> np.ndarray:
        return self.load(np.asarray(positions, dtype=np.int64))


def load_clean(
    source: str,
    root: str | os.PathLike | None = None,
    n_per_domain: int | None = None,
    id_list: str | os.PathLike | None = None,
    seed: int = 0,
) -> CleanSet:
    """The clean test set ``source`` (first ``n_per_domain`` samples; folder sources: see below).

    Args:
        source: ``cifar10``, ``cifar100``, ``fashion_mnist``, ``embedded`` or ``imagenet``.
        root: Data root (None: ``$TTA_DATA_ROOT``; Fashion-MNIST also tries Debian's folder).
        n_per_domain: Samples to keep; ImageNet takes a class-balanced subset or the first
            ``n`` of ``id_list`` (as the ImageNet-C reader does).
        id_list: ImageNet only: RobustBench-style ``wnid/filename`` list.
        seed: Generator seed of the embedded split.

    Raises:
        FileNotFoundError: The source's files are not under the root (layout in the message).
        ValueError: Unknown source, malformed files, bad ``n_per_domain``.
    """
    if source not in CLEAN_SOURCES:
        raise ValueError(f"unknown clean source {source!r}; valid: {', '.join(CLEAN_SOURCES)}")
    if id_list and source != "imagenet":
        raise ValueError(f"dataset.id_list applies to ImageNet only, not {source}")
    if source == "imagenet":
        return _imagenet(root, n_per_domain, id_list)
    if source == "embedded":
        images, labels = synthetic.generate("test", seed)
        fingerprint = synthetic.fingerprint(seed)[:16]
    elif source == "fashion_mnist":
        images, labels, fingerprint = fashion_mnist(root)
    else:
        images, labels, fingerprint = _cifar(root, source)
    n = check_n(n_per_domain, len(labels), source)
    images = images[:n]
    return CleanSet(
        source,
        100 if source == "cifar100" else 10,
        labels[:n].astype(np.int64),
        np.arange(n, dtype=np.int64),
        fingerprint,
        lambda positions: images[positions],
    )


def _cifar(root, source: str) -> tuple[np.ndarray, np.ndarray, str]:
    folder, file, key = {
        "cifar10": ("cifar-10-batches-py", "test_batch", "labels"),
        "cifar100": ("cifar-100-python", "test", "fine_labels"),
    }[source]
    path = find_dir(root, [folder], lambda d: [d / file], source) / file
    try:
        entry = load_cifar_pickle(path)  # refuses anything but the format's types
        data, labels = np.asarray(entry["data"], dtype=np.uint8), np.asarray(entry[key])
    except RefusedPickleError as exc:  # a crafted file: its message names file and global
        raise ValueError(str(exc)) from None
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(
            f"{path} is not a {source} test pickle (dict with 'data' and {key!r}): {exc!r}"
        ) from None
    if data.ndim != 2 or data.shape[1] != 3072 or labels.shape != (len(data),):
        raise ValueError(
            f"{path}: 'data' has shape {data.shape} and {key!r} {labels.shape}; expected "
            "(N, 3072) uint8 (CHW planes of 32x32 RGB) and N labels"
        )
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64), fingerprint_files([path])


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx-ubyte array (LeCun's MNIST format, gzip or raw)."""
    with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
        data = f.read()
    if len(data) < 4 + 4 * ndim or data[:4] != bytes([0, 0, 8, ndim]):
        raise ValueError(f"{path} is not an idx{ndim}-ubyte file (magic {data[:4].hex()})")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims}, found {array.size} bytes of data")
    return array.reshape(dims)


FASHION_SPLITS = {"test": "t10k", "train": "train"}  # split -> idx file prefix


def fashion_mnist(root, split: str = "test") -> tuple[np.ndarray, np.ndarray, str]:
    """Fashion-MNIST ``split`` (``test``: 10,000, ``train``: 60,000) as uint8 (N, 3, 32, 32):
    28x28 grey zero-padded by 2 px (the background is black) and replicated to RGB; with the
    labels and a fingerprint of the files read. Searched under ``root`` / ``$TTA_DATA_ROOT``,
    then Debian's ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``)."""
    prefix = FASHION_SPLITS[split]
    names = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")

    def markers(d: Path) -> list[Path]:
        return [d / f"{names[0]}.gz", d / names[0]]

    folder = find_dir(
        root,
        ["fashion-mnist", "FashionMNIST/raw", "datasets/fashion-mnist"],
        markers,
        "fashion_mnist",
        fallbacks=[_DEBIAN_FASHION],
    )
    paths = [folder / n if (folder / n).exists() else folder / f"{n}.gz" for n in names]
    if not paths[1].exists():
        raise FileNotFoundError(f"{folder} has {paths[0].name} but no {names[1]}[.gz]")
    grey, labels = _read_idx(paths[0], 3), _read_idx(paths[1], 1)
    if grey.shape[1:] != (28, 28) or len(labels) != len(grey):
        raise ValueError(f"{folder}: images {grey.shape} and labels {labels.shape} do not match")
    padded = np.pad(grey, ((0, 0), (2, 2), (2, 2)))  # background is 0: pad with black
    images = np.ascontiguousarray(np.repeat(padded[:, None], 3, axis=1))
    return images, labels.astype(np.int64), fingerprint_files(paths)


def _imagenet(root, n_per_domain: int | None, id_list) -> CleanSet:
    def markers(d: Path) -> list[Path]:
        first = next((w for w in (list_wnids(d) if d.is_dir() else []) if _WNID.match(w)), None)
        return [d / (first or "n01440764")]

    folder = find_dir(root, ["val", "imagenet/val", "ILSVRC2012/val"], markers, "imagenet")
    wnids = list_wnids(folder)
    everything = list_samples(folder, wnids)
    ids = read_id_list(id_list, wnids) if id_list else everything
    n = check_n(n_per_domain, len(ids), f"{folder}")
    ids = ids[:n] if id_list else select_samples(ids, wnids, n)
    position = {s: i for i, s in enumerate(everything)}
    missing = [s for s in ids if s not in position]
    if missing:
        raise FileNotFoundError(f"{folder} lacks {len(missing)} listed images, e.g. {missing[0]}")
    cls = {w: i for i, w in enumerate(wnids)}
    h = hashlib.sha256("\n".join(everything).encode())
    h.update(fingerprint_files([folder / ids[0], folder / ids[-1]], folder).encode())

    def load(positions: np.ndarray) -> np.ndarray:
        return np.stack([preprocess_imagenet(folder / ids[i]) for i in positions])

    return CleanSet(
        "imagenet",
        len(wnids),
        np.array([cls[s.split("/")[0]] for s in ids], dtype=np.int64),
        np.array([position[s] for s in ids], dtype=np.int64),
        h.hexdigest()[:16],
        load,
        ids,
        wnids,
    )


def preprocess_imagenet(path: Path) -> np.ndarray:
    """uint8 (3, 224, 224): ``Resize(256)`` + ``CenterCrop(224)``, PIL bilinear, as ImageNet-C."""
    with Image.open(path) as img:
        img = TF.center_crop(TF.resize(img.convert("RGB"), 256, InterpolationMode.BILINEAR), 224)
        return np.asarray(img).transpose(2, 0, 1)
