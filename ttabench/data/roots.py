"""Where benchmark files live: data-root resolution, layout help texts and file fingerprints.

The layouts are those of the published archives of Hendrycks & Dietterich, ICLR 2019,
"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations" (CIFAR-10-C,
CIFAR-100-C, ImageNet-C, Tiny-ImageNet-C on Zenodo) and of the clean sets they were made from
(shared/specs/corruptions-and-models.md, section 1). Resolution order: an explicit root, then
``$TTA_DATA_ROOT``, then fixed system locations (Debian's datasets folder). Both
``root/CIFAR-10-C/...`` and a root pointing into ``CIFAR-10-C`` are accepted. Nothing is ever
downloaded: a missing root is an error that names the expected layout and every path tried.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

ENV_VAR = "TTA_DATA_ROOT"
VALID = range(1, 6)  # severities
_SAMPLE_BYTES = 1 << 16  # bytes hashed at each end of a file: headers plus the first rows

#: One line per layout, quoted in every "not found" error.
LAYOUTS: dict[str, str] = {
    "CIFAR-10-C": (
        "<root>/CIFAR-10-C/{corruption}.npy (50000x32x32x3 uint8 each: 5 severities x 10000 "
        "test images, severity-major) + <root>/CIFAR-10-C/labels.npy (50000 uint8); "
        "published as CIFAR-10-C.tar, Zenodo record 2535967"
    ),
    "CIFAR-100-C": (
        "<root>/CIFAR-100-C/{corruption}.npy (50000x32x32x3 uint8 each: 5 severities x 10000 "
        "test images, severity-major) + <root>/CIFAR-100-C/labels.npy (50000 uint8); "
        "published as CIFAR-100-C.tar, Zenodo record 3555552"
    ),
    "Fashion-MNIST-C": (
        "<root>/Fashion-MNIST-C/{corruption}.npy (50000x32x32x3 uint8) + labels.npy, the "
        "CIFAR-10-C layout; no published copy: write it with `ttabench make-c --source "
        "fashion_mnist`"
    ),
    "ImageNet-C": (
        "<root>/ImageNet-C/{corruption}/{severity 1-5}/{wnid}/ILSVRC2012_val_XXXXXXXX.JPEG "
        "(1000 wnid folders x 50 images of 224x224 per corruption and severity); published as "
        "noise.tar, blur.tar, weather.tar, digital.tar, extra.tar, Zenodo record 2235448"
    ),
    "Tiny-ImageNet-C": (
        "<root>/Tiny-ImageNet-C/{corruption}/{severity 1-5}/{wnid}/*.JPEG (200 wnid folders "
        "x 50 images of 64x64); published as Tiny-ImageNet-C.tar, Zenodo record 2536630"
    ),
    "cifar10": (
        "<root>/cifar-10-batches-py/test_batch (torchvision's CIFAR-10 pickle: dict with "
        "'data' Nx3072 uint8 in CHW planes and 'labels')"
    ),
    "cifar100": (
        "<root>/cifar-100-python/test (torchvision's CIFAR-100 pickle: dict with 'data' "
        "Nx3072 uint8 in CHW planes and 'fine_labels')"
    ),
    "imagenet": "<root>/val/{wnid}/*.JPEG (ImageNet validation images in class folders)",
    "fashion_mnist": (
        "<root>/fashion-mnist/t10k-images-idx3-ubyte[.gz] + t10k-labels-idx1-ubyte[.gz] "
        "(Debian's dataset-fashion-mnist installs /usr/share/datasets/fashion-mnist) or "
        "torchvision's <root>/FashionMNIST/raw/ with the same files"
    ),
}


def data_root(root: str | os.PathLike | None) -> Path | None:
    """``root`` if given, else ``$TTA_DATA_ROOT``, else None (``~`` is expanded)."""
    value = os.fspath(root) if root not in (None, "") else os.environ.get(ENV_VAR, "")
    return Path(value).expanduser() if value else None


def find_dir(
    root: str | os.PathLike | None,
    folders: Sequence[str],
    markers: Callable[[Path], Sequence[Path]],
    what: str,
    fallbacks: Iterable[Path] = (),
) -> Path:
    """The first folder under the data root that holds the layout ``what``.

    Args:
        root: Explicit data root (``dataset.root``) or None for ``$TTA_DATA_ROOT``.
        folders: Sub-folder names to try below the root, in order (the root itself is tried
            last, so a root pointing into the benchmark folder works).
        markers: ``markers(folder)``: the files or folders whose presence identifies the layout;
            a candidate is accepted if any of them exists.
        what: Key of :data:`LAYOUTS` (also used in the message).
        fallbacks: Folders tried when neither a root nor ``$TTA_DATA_ROOT`` is set.

    Raises:
        FileNotFoundError: No candidate holds the layout; the message lists every path looked
            for and the expected layout.
    """
    base = data_root(root)
    candidates = [base / f for f in folders] + [base] if base else list(fallbacks)
    looked: list[str] = []
    for candidate in candidates:
        found = list(markers(candidate))
        if any(p.exists() for p in found):
            return candidate
        looked.extend(str(p) for p in found)
    if base is None:
        where = f"no data root given (dataset.root and ${ENV_VAR} are unset)"
    elif not base.exists():
        where = f"data root {base} does not exist"
    else:
        where = f"not found under data root {base}"
    tried = f"; looked for: {', '.join(looked)}" if looked else ""
    raise FileNotFoundError(
        f"{what}: {where}{tried}. Expected layout: {LAYOUTS[what]}. Set dataset.root=/path/to/data"
        f" or the {ENV_VAR} environment variable. {download_hint(what)}"
    )


#: layout -> ``ttabench download`` item that provides it
DOWNLOADS = {
    "CIFAR-10-C": "cifar10c",
    "CIFAR-100-C": "cifar100c",
    "Tiny-ImageNet-C": "tinyimagenetc",
    "cifar10": "cifar10",
    "cifar100": "cifar100",
}


def download_hint(what: str) -> str:
    """How to get the layout ``what``: the opt-in download command, or why there is none."""
    item = DOWNLOADS.get(what)
    if what == "fashion_mnist":
        return "On Debian/Ubuntu: apt install dataset-fashion-mnist (read from its folder)."
    if item is None:
        return "ttabench downloads nothing by itself, and offers no download of it."
    return f"Download it (opt-in): ttabench download {item} --root DIR"


def fingerprint_files(paths: Iterable[Path], base: Path | None = None) -> str:
    """16 hex digits identifying files by name, size and the bytes at both ends.

    Content-based, not mtime-based, so a copied dataset keeps its fingerprint; reading 64 KiB
    at each end (npy header and first rows, or a JPEG's header) keeps it cheap for 2.3 GB files.
    """
    h = hashlib.sha256()
    for path in paths:
        size = path.stat().st_size
        name = path.relative_to(base) if base else Path(path.name)
        h.update(f"{name.as_posix()}:{size}:".encode())
        with open(path, "rb") as f:
            h.update(f.read(_SAMPLE_BYTES))
            if size > 2 * _SAMPLE_BYTES:
                f.seek(size - _SAMPLE_BYTES)
                h.update(f.read(_SAMPLE_BYTES))
    return h.hexdigest()[:16]


def check_severities(severity: int | Sequence[int]) -> list[int]:
    """``severity`` as a non-empty list of ints in 1..5, or a ValueError."""
    severities = [severity] if isinstance(severity, int) else list(severity)
    bad = [s for s in severities if isinstance(s, bool) or not isinstance(s, int) or s not in VALID]
    if not severities or bad:
        raise ValueError(f"severity must be in 1..5 (or a list of them), got {severity!r}")
    return severities


def check_n(n_per_domain: int | None, available: int, what: str) -> int:
    """The number of samples per domain: ``n_per_domain`` (validated) or all ``available``."""
    if n_per_domain is None:
        return available
    if isinstance(n_per_domain, bool) or not isinstance(n_per_domain, int) or n_per_domain < 1:
        raise ValueError(f"n_per_domain must be an int >= 1 or null, got {n_per_domain!r}")
    if n_per_domain > available:
        raise ValueError(
            f"n_per_domain={n_per_domain} exceeds the {available} samples per domain of {what} "
            "(dataset.n_per_domain=null takes them all)"
        )
    return n_per_domain


def check_corruptions(corruptions: Sequence[str], valid: Sequence[str]) -> list[str]:
    """``corruptions`` as a list of known, distinct names, or a ValueError naming the valid ones."""
    names = [corruptions] if isinstance(corruptions, str) else [str(c) for c in corruptions]
    unknown = [c for c in names if c not in valid]
    if unknown or not names:
        problem = f"unknown corruption(s) {unknown}" if unknown else "an empty list"
        raise ValueError(f"{problem}; dataset.corruptions takes names from: {', '.join(valid)}")
    check_distinct(names)
    return names


def check_distinct(names: Sequence[str]) -> None:
    """A corruption listed twice would be one domain counted twice (its summary row merged over
    both visits): refused. Revisiting domains is the stream's job (``stream=continual``
    with ``stream.domains=gradual``, or a mixed schedule)."""
    repeated = sorted({c for c in names if list(names).count(c) > 1})
    if repeated:
        raise ValueError(
            f"dataset.corruptions lists {', '.join(repeated)} more than once; list each "
            "corruption once (each is one domain; streams decide visits)"
        )
