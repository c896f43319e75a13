"""Writers of small fixture files in the exact published formats (no dataset is on disk).

CIFAR-C files are full-shape (50000, 32, 32, 3) uint8 ``.npy`` files created sparse with
``open_memmap`` (cheap: only written pages take disk space), with recognisable values in a few
rows: :func:`mark` encodes (corruption, severity, image index) into the pixels.
"""

from __future__ import annotations

import gzip
import pickle
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from ttabench.data.corruptions.tables import ALL_CORRUPTIONS

BLOCK = 10_000
MARKED = (0, 1, 2, 127, 4321, 9999)  # image indices carrying recognisable values


def mark(corruption: str, severity: int, index: int) -> np.ndarray:
    """The HWC image written at (corruption, severity, index): R=severity, G/B=index, rest."""
    image = np.full((32, 32, 3), ALL_CORRUPTIONS.index(corruption) + 100, dtype=np.uint8)
    image[0, 0] = (severity, index % 256, index // 256)
    return image


def cifar_labels(num_classes: int = 10) -> np.ndarray:
    """10,000 test labels (a fixed permutation of a balanced set)."""
    return np.random.default_rng(0).permutation(np.arange(BLOCK) % num_classes).astype(np.uint8)


def write_cifar_c(
    folder: Path,
    corruptions: Sequence[str],
    num_classes: int = 10,
    rows: int = 5 * BLOCK,
    filled: int = 0,
) -> Path:
    """A CIFAR-10-C folder: ``{c}.npy`` (rows x 32 x 32 x 3 uint8) + ``labels.npy`` (uint8).

    ``filled`` > 0 also writes random images into the first ``filled`` rows of every severity
    block (for runs that should see more than zeros).
    """
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "labels.npy", np.tile(cifar_labels(num_classes), 5)[:rows])
    rng = np.random.default_rng(1)
    for corruption in corruptions:
        array = np.lib.format.open_memmap(
            folder / f"{corruption}.npy", "w+", np.uint8, (rows, 32, 32, 3)
        )
        for severity in range(1, 6):
            start = (severity - 1) * BLOCK
            if filled:
                array[start : start + filled] = rng.integers(0, 256, (filled, 32, 32, 3))
            for i in MARKED:
                if start + i < rows:
                    array[start + i] = mark(corruption, severity, i)
        array.flush()
        del array
    return folder


def colour(wnid_index: int, file_index: int, domain_key: int = 0) -> tuple[int, int, int]:
    """A flat colour that survives JPEG, identifying an image of a folder fixture."""
    return ((40 * wnid_index + 20) % 256, 60 * file_index + 30, 20 * domain_key + 10)


def write_jpeg(path: Path, rgb: tuple[int, int, int], size: tuple[int, int]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path, quality=85, optimize=True)


def write_folder_c(
    folder: Path,
    corruptions: Sequence[str],
    wnids: Sequence[str],
    files: int = 2,
    severities: Sequence[int] = (1, 5),
    size: int = 224,
) -> Path:
    """An ImageNet-C-style folder ``{c}/{s}/{wnid}/ILSVRC2012_val_*.JPEG`` (wnids as given).

    Wnid ``nK000000`` holds files ``ILSVRC2012_val_0000K00f.JPEG`` of :func:`colour` (K - 1, f, s).
    """
    for c in corruptions:
        for s in severities:
            for wnid in wnids:
                key = int(wnid[1:]) // 1_000_000
                for f in range(files):
                    name = f"ILSVRC2012_val_{1000 * key + f:08d}.JPEG"
                    rgb = colour(key - 1, f, s)
                    write_jpeg(folder / c / str(s) / wnid / name, rgb, (size, size))
    return folder


def write_cifar_pickle(root: Path, n: int = 40, cifar100: bool = False) -> Path:
    """torchvision's CIFAR test pickle (``data`` Nx3072 CHW planes, ``labels``/``fine_labels``)."""
    folder, file = (
        ("cifar-100-python", "test") if cifar100 else ("cifar-10-batches-py", "test_batch")
    )
    rng = np.random.default_rng(2)
    labels = (np.arange(n) * 7 % (100 if cifar100 else 10)).tolist()
    entry = {"batch_label": "testing batch 1 of 1", "data": rng.integers(0, 256, (n, 3072))}
    entry["data"] = entry["data"].astype(np.uint8)
    entry["filenames"] = [f"img_{i}.png" for i in range(n)]
    if cifar100:
        entry |= {"fine_labels": labels, "coarse_labels": [y // 5 for y in labels]}
    else:
        entry["labels"] = labels
    (root / folder).mkdir(parents=True, exist_ok=True)
    with open(root / folder / file, "wb") as f:
        pickle.dump(entry, f)
    return root / folder / file


def write_idx(path: Path, array: np.ndarray) -> None:
    """An idx-ubyte file (MNIST format), gzipped if ``path`` ends in .gz."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)


def write_fashion_mnist(folder: Path, n: int = 30, gz: bool = True) -> Path:
    """Debian / torchvision Fashion-MNIST test files (t10k-*-ubyte[.gz])."""
    rng = np.random.default_rng(3)
    ext = ".gz" if gz else ""
    write_idx(folder / f"t10k-images-idx3-ubyte{ext}", rng.integers(1, 256, (n, 28, 28)))
    write_idx(folder / f"t10k-labels-idx1-ubyte{ext}", np.arange(n) % 10)
    return folder


def write_imagenet_val(root: Path, wnids: Sequence[str], files: int = 2) -> Path:
    """``root/val/{wnid}/ILSVRC2012_val_*.JPEG`` with non-square images (to exercise the crop)."""
    rng = np.random.default_rng(4)
    for w, wnid in enumerate(sorted(wnids)):
        for f in range(files):
            path = root / "val" / wnid / f"ILSVRC2012_val_{100 * w + f:08d}.JPEG"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (300 + 10 * f, 260, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path, quality=90)
    return root


#: (width, height, PIL mode) of frost1.png .. frost5.jpg (spec 2.7), for look-alike textures.
FROST_FILES = {
    "frost1.png": (900, 600, "RGBA"),
    "frost2.png": (560, 315, "RGBA"),
    "frost3.png": (560, 315, "RGBA"),
    "frost4.jpg": (527, 350, "RGB"),
    "frost5.jpg": (660, 495, "RGB"),
}


def write_frost_textures(folder: Path, seed: int = 5) -> Path:
    """Stand-ins for the frost photographs (same names, sizes and formats), never the originals.

    Bright, bluish, smooth-plus-grain content like frost; PNGs are RGBA with an opaque alpha.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, (w, h, mode) in FROST_FILES.items():
        coarse = Image.fromarray(rng.integers(90, 256, (h // 40 + 2, w // 40 + 2, 3), np.uint8))
        smooth = np.asarray(coarse.resize((w, h), Image.BICUBIC), dtype=np.int16)
        grain = rng.integers(-30, 31, (h, w, 3))
        rgb = np.clip(smooth + grain + np.array([0, 10, 25]), 0, 255).astype(np.uint8)
        image = Image.fromarray(rgb)
        if mode == "RGBA":
            image.putalpha(255)
            image.save(folder / name)
        else:
            image.save(folder / name, quality=90)
    return folder
