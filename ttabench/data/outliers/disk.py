"""STAMP's corrupted out-of-distribution sets, read from disk (Yu et al., ECCV 2024, "STAMP:
Outlier-Aware Test-Time Adaptation with Stable Memory Replay", Sec. 4.1).

The layouts are those ``load_dataset`` in STAMP's ``src/data/data.py`` reads, below one data root
(STAMP keeps them beside ``CIFAR-10-C``):

=================== ==========================================================================
``svhn_c``          ``SVHN-C/{corruption}/{severity}/test_32x32.mat`` (``X``: 32x32x3xN uint8,
                    read with ``scipy.io.loadmat`` as STAMP's ``src/data/SVHN.py`` does)
``lsun_c``          ``LSUN_resize-C/{corruption}/{severity}/{class}/*`` (torchvision ImageFolder)
``places365_c``     ``PLACES365-C/{corruption}/{severity}/{class}/*`` (ImageFolder)
``textures_c``      ``Textures-C/{corruption}/{severity}/images/{class}/*`` (ImageFolder)
``tiny_imagenet_c`` ``Tiny-ImageNet-C/{corruption}/{severity}/{wnid}/*.JPEG`` (ImageFolder)
=================== ==========================================================================

Sample order is ImageFolder's (sorted class folders, then sorted file names, with the
extensions ImageFolder accepts; the listing is torchvision's own ``make_dataset``) or the
``.mat`` order, so STAMP's "first N outliers" (``Subset(range(N))``) are the first N here.
Deviation: for Tiny-ImageNet-C STAMP first reorders the set by a random permutation cached in
its checkpoint folder (``list.pickle``, ``load_tinyimagenet_C``), which cannot be reproduced;
we take the first N in ImageFolder order. Every label is -1. Each image is converted to RGB and
resized to the test set's size as STAMP's ``transforms.Resize((size, size))`` does on a PIL
image: PIL bilinear, which antialiases when shrinking (a no-op at the same size).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image

from ttabench.data.base import CorruptionDataset, checked_indices
from ttabench.data.folder_c import decode
from ttabench.data.outliers import image_size
from ttabench.data.roots import ENV_VAR, data_root, fingerprint_files
from ttabench.domains import Domain


class Layout(NamedTuple):
    folder: str  # below the data root
    inner: str  # below {corruption}/{severity}: "" or Textures-C's "images"
    files: str  # what a domain folder holds, quoted in errors


MAT_FILE = "test_32x32.mat"
LAYOUTS = {
    "svhn_c": Layout("SVHN-C", "", MAT_FILE),
    "lsun_c": Layout("LSUN_resize-C", "", "{class}/<images>"),
    "places365_c": Layout("PLACES365-C", "", "{class}/<images>"),
    "textures_c": Layout("Textures-C", "images", "{class}/<images>"),
    "tiny_imagenet_c": Layout("Tiny-ImageNet-C", "", "{wnid}/<images>"),
}


def layout_text(name: str) -> str:
    """The expected layout of source ``name``, as quoted in every "not found" error."""
    folder, inner, files = LAYOUTS[name]
    path = "/".join(p for p in ("<root>", folder, "{corruption}", "{severity}", inner, files) if p)
    kind = "SVHN's .mat: 'X' 32x32x3xN uint8" if name == "svhn_c" else "torchvision ImageFolder"
    return f"{path} ({kind}; STAMP's {name} set, src/data/data.py)"


class DiskOutliers:
    """One of STAMP's corrupted OOD sets under ``folder``, served at image size ``size``.

    Args:
        name: Source name, a key of :data:`LAYOUTS`.
        folder: The set's folder (``<root>/SVHN-C`` ...).
        size: (H, W) of the test set's images.
        domains: Domains that must exist now (checked at construction; others on first use).
        workers: Threads decoding a batch's image files (None: the CPUs, at most 8; 0 or 1:
            the calling thread). Never changes the images.
        mat_cache: ``.mat`` files kept decoded at once (a full SVHN-C test file is 80 MB);
            a stream alternating between more domains re-reads them.

    Raises:
        FileNotFoundError: A domain folder of ``domains`` is missing.
    """

    def __init__(
        self,
        name: str,
        folder: Path,
        size: tuple[int, int],
        domains: Sequence[Domain] = (),
        workers: int | None = None,
        mat_cache: int = 4,
    ) -> None:
        self.name, self.dir, self.layout = name, Path(folder), LAYOUTS[name]
        self.size = (int(size[0]), int(size[1]))
        self.domains = [Domain(d.corruption, d.severity, name) for d in domains]
        self.workers = min(8, os.cpu_count() or 1) if workers is None else workers
        self.mat_cache = mat_cache
        self._pool: ThreadPoolExecutor | None = None
        self._listing: dict[tuple[str, int], list[str] | int] = {}
        self._mats: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        missing = [str(self._base(d)) for d in self.domains if not self._base(d).is_dir()]
        if missing:
            raise FileNotFoundError(
                f"{name} in {self.dir} lacks the domain folder(s) {', '.join(missing)}. "
                f"Expected layout: {layout_text(name)}"
            )

    def labels(self, domain: Domain) -> np.ndarray:
        """-1 for every file of the domain (listed on first use; nothing decoded)."""
        return np.full(self._count(domain), -1, dtype=np.int64)

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        """uint8 (N, 3, H, W) images of ``indices`` at the test set's size, decoded now."""
        indices = checked_indices(indices, self._count(domain))
        if self.name == "svhn_c":
            x = self._mat(domain)[..., indices].transpose(3, 0, 1, 2)  # (N, 32, 32, 3)
            hwc = [self._resized(img) for img in x] if x.shape[1:3] != self.size else list(x)
        else:
            base, files = self._base(domain), self._files(domain)
            paths = [base / files[i] for i in indices]
            pool = self._threads()
            hwc = list(pool.map(self._read, paths)) if pool else [self._read(p) for p in paths]
        if not hwc:
            return torch.zeros((0, 3, *self.size), dtype=torch.uint8)
        return torch.from_numpy(np.ascontiguousarray(np.stack(hwc).transpose(0, 3, 1, 2)))

    def provenance(self) -> dict[str, str]:
        """The source, folder, size, order and a fingerprint of the configured domains' files."""
        h = hashlib.sha256()
        for domain in self.domains:
            base = self._base(domain)
            if self.name == "svhn_c":
                ends = [base / MAT_FILE]
            else:
                files = self._files(domain)
                h.update("\n".join(files).encode())
                ends = [base / files[0], base / files[-1]] if files else []
            h.update(f"{domain.name}:{self._count(domain)}:".encode())
            h.update(fingerprint_files(ends, self.dir).encode())
        order = "first N in ImageFolder order" if self.name != "svhn_c" else "first N of the .mat"
        if self.name == "tiny_imagenet_c":
            order += " (not STAMP's cached random permutation)"
        return {
            "source": self.name,
            "root": str(self.dir),
            "layout": layout_text(self.name),
            "size": f"{self.size[0]}x{self.size[1]}",
            "resize": "PIL bilinear (torchvision Resize on PIL images)",
            "order": order,
            "fingerprint": h.hexdigest()[:16],
        }

    def _base(self, domain: Domain) -> Path:
        return self.dir / domain.corruption / str(domain.severity) / self.layout.inner

    def _count(self, domain: Domain) -> int:
        if self.name == "svhn_c":
            return self._mat_count(domain)
        return len(self._files(domain))

    def _files(self, domain: Domain) -> list[str]:
        """Paths, relative to the domain folder, in ImageFolder order (listed once)."""
        key = (domain.corruption, domain.severity)
        if key not in self._listing:
            base = self._checked_base(domain)
            from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

            try:
                samples = make_dataset(str(base), extensions=IMG_EXTENSIONS)
            except FileNotFoundError as exc:  # no class folder, or a class without images
                raise FileNotFoundError(
                    f"{self.name}: {exc} Expected layout: {layout_text(self.name)}"
                ) from None
            self._listing[key] = [os.path.relpath(path, base) for path, _ in samples]
        return self._listing[key]

    def _mat_count(self, domain: Domain) -> int:
        """N of the domain's ``X`` from the .mat header (the data are not read)."""
        key = (domain.corruption, domain.severity)
        if key not in self._listing:
            path = self._checked_base(domain) / MAT_FILE
            if not path.is_file():
                raise FileNotFoundError(
                    f"{self.name}: {path} is missing. Expected layout: {layout_text(self.name)}"
                )
            shapes = {v[0]: (v[1], v[2]) for v in _scipy_io().whosmat(str(path))}
            shape, kind = shapes.get("X", ((), "missing"))
            if len(shape) != 4 or shape[2] != 3 or kind != "uint8":
                raise ValueError(
                    f"{path}: 'X' is {kind} of shape {shape}; expected uint8 (32, 32, 3, N) as "
                    "in SVHN's test_32x32.mat"
                )
            self._listing[key] = int(shape[3])
        return self._listing[key]

    def _mat(self, domain: Domain) -> np.ndarray:
        """The domain's ``X`` (H, W, 3, N), kept for the ``mat_cache`` latest domains."""
        key = (domain.corruption, domain.severity)
        if key in self._mats:
            self._mats.move_to_end(key)
            return self._mats[key]
        n = self._mat_count(domain)
        path = self._base(domain) / MAT_FILE
        x = _scipy_io().loadmat(str(path), variable_names=["X"])["X"]
        if x.shape[3] != n:
            raise ValueError(f"{path}: 'X' changed while reading ({x.shape[3]} images, not {n})")
        self._mats[key] = x
        while len(self._mats) > max(1, self.mat_cache):
            self._mats.popitem(last=False)
        return x

    def _checked_base(self, domain: Domain) -> Path:
        if domain.severity < 1:
            raise ValueError(f"{self.name} has corrupted images only (severity 1-5), not {domain}")
        base = self._base(domain)
        if not base.is_dir():
            raise FileNotFoundError(
                f"{self.name}: domain folder {base} is missing. Expected layout: "
                f"{layout_text(self.name)}"
            )
        return base

    def _read(self, path: Path) -> np.ndarray:
        """(H, W, 3) RGB of one file at the test size (ImageFolder's loader, then Resize)."""
        return self._resized(decode([path])[0].transpose(1, 2, 0))

    def _resized(self, hwc: np.ndarray) -> np.ndarray:
        if hwc.shape[:2] == self.size:
            return hwc
        h, w = self.size
        return np.asarray(Image.fromarray(hwc).resize((w, h), Image.Resampling.BILINEAR))

    def _threads(self) -> ThreadPoolExecutor | None:
        if self._pool is None and self.workers > 1:
            self._pool = ThreadPoolExecutor(self.workers, "ttabench-ood-decode")
        return self._pool


def _scipy_io():
    try:
        import scipy.io
    except ImportError:
        raise ImportError(
            "svhn_c reads SVHN-C's .mat files with scipy, which is not installed: pip install scipy"
        ) from None
    return scipy.io


def find_folder(name: str, dataset: CorruptionDataset, root: str | os.PathLike | None) -> Path:
    """The folder of set ``name``: below ``root`` if given; else below the dataset's ``root``,
    the parent of its folder (``dataset.dir``: STAMP keeps the OOD sets beside CIFAR-10-C),
    then ``$TTA_DATA_ROOT``. A root may also point into the set's folder itself.

    Raises:
        FileNotFoundError: No candidate holds a domain folder of the dataset's domains.
    """
    if root not in (None, ""):
        bases = [data_root(root)]
    else:
        own, folder = getattr(dataset, "root", None), getattr(dataset, "dir", None)
        bases = [
            data_root(own) if own not in (None, "") else None,
            Path(folder).parent if folder is not None else None,
            data_root(None),
        ]
    layout = LAYOUTS[name]
    looked: list[str] = []
    for base in dict.fromkeys(b for b in bases if b is not None):
        for candidate in (base / layout.folder, base):
            marks = [candidate / d.corruption / str(d.severity) for d in dataset.domains]
            if any(m.is_dir() for m in marks):
                return candidate
            looked.extend(str(m) for m in marks[:3])
    none = f"no ood_root given, the dataset keeps no folder and ${ENV_VAR} is unset"
    tried = f"; looked for: {', '.join(looked)}" if looked else f" ({none})"
    raise FileNotFoundError(
        f"{name}: no {layout.folder} folder with the dataset's domains{tried}. Expected layout: "
        f"{layout_text(name)}. Set the run key ood_root=/path/to/data (the folder holding "
        f"{layout.folder}) or the {ENV_VAR} environment variable. {_get_hint(name)}"
    )


def _get_hint(name: str) -> str:
    if name == "tiny_imagenet_c":
        return "Download it (opt-in): ttabench download tinyimagenetc --root DIR"
    return (
        "ttabench offers no download of it; STAMP's README generates the corrupted sets with "
        "github.com/yuyongcan/generating_outlier"
    )


def build(
    name: str, dataset: CorruptionDataset, root: str | os.PathLike | None = None
) -> DiskOutliers:
    """Source ``name`` (a key of :data:`LAYOUTS`) for ``dataset``'s domains and image size."""
    if name not in LAYOUTS:
        raise ValueError(f"disk outlier sets: {', '.join(LAYOUTS)}; not {name!r}")
    clean = [d.name for d in dataset.domains if d.severity < 1]
    if clean:
        raise ValueError(
            f"stream.outliers.source={name} is corrupted only (severity 1-5), but the dataset has "
            f"the clean domain(s) {', '.join(clean)}; use source=noise or split for them"
        )
    folder = find_folder(name, dataset, root)
    return DiskOutliers(name, folder, image_size(dataset), dataset.domains)
