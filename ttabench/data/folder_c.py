"""Reader of the ImageNet-C / Tiny-ImageNet-C JPEG folders (Hendrycks & Dietterich, ICLR 2019).

"Benchmarking Neural Network Robustness to Common Corruptions and Perturbations", Zenodo records
2235448 (ImageNet-C) and 2536630 (Tiny-ImageNet-C): ``{corruption}/{severity}/{wnid}/*.JPEG``,
224x224 (ImageNet-C: 1000 wnids x 50) or 64x64 (Tiny: 200 wnids x 50). Class index = position of
the wnid in the sorted wnid folders (torchvision ImageFolder order, RobustBench's class map).

Samples are fixed once, from one *reference* domain folder or from an id list in RobustBench's
``wnid/ILSVRC2012_val_XXXXXXXX.JPEG`` format, and the same file names are read in every domain
(the files of all corruptions and severities share names). Labels come from the listing alone;
JPEGs are decoded per batch. Known defect: Tiny-ImageNet-C ``frost`` has 1000 wnid folders
instead of 200 (hendrycks/robustness#60): wnids outside the reference set are dropped with a
warning, and frost is never used as the reference while another corruption folder exists.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ttabench.data.base import checked_indices
from ttabench.data.cifar_c import make_c_record
from ttabench.data.corruptions import COMMON_CORRUPTIONS
from ttabench.data.corruptions.tables import ALL_CORRUPTIONS
from ttabench.data.roots import LAYOUTS, check_corruptions, check_n, check_severities, find_dir
from ttabench.domains import Domain

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")


def list_wnids(folder: Path) -> list[str]:
    """Sorted class folders of ``folder`` (the class index is the position in this list)."""
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def list_samples(folder: Path, wnids: Sequence[str]) -> list[str]:
    """``wnid/filename`` of every image in ``folder``'s class folders, sorted by (wnid, name)."""
    return [
        f"{wnid}/{name}"
        for wnid in wnids
        for name in sorted(os.listdir(folder / wnid))
        if name.lower().endswith(IMAGE_SUFFIXES) and not name.startswith(".")
    ]


def read_id_list(path: str | os.PathLike, wnids: Sequence[str]) -> list[str]:
    """Sample ids of a RobustBench-style list: one ``wnid/filename`` per line (``#`` comments).

    Raises:
        FileNotFoundError: The list does not exist.
        ValueError: A malformed line, a wnid not among ``wnids``, or a duplicate id.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"id list {path} not found (dataset.id_list)")
    known, ids = set(wnids), []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split("/")
        if len(parts) != 2 or not parts[1].lower().endswith(IMAGE_SUFFIXES):
            raise ValueError(
                f"{path}:{number}: {line!r} is not 'wnid/ILSVRC2012_val_XXXXXXXX.JPEG'"
            )
        if parts[0] not in known:
            raise ValueError(f"{path}:{number}: wnid {parts[0]!r} has no class folder")
        ids.append(line)
    if len(set(ids)) != len(ids) or not ids:
        raise ValueError(f"{path}: the id list is empty or repeats an id")
    return ids


def select_samples(ids: Sequence[str], wnids: Sequence[str], n: int | None) -> list[str]:
    """A class-balanced, deterministic subset of ``n`` of the (wnid-sorted) ``ids``.

    Takes the first file of every class, then the second, ... until ``n`` are chosen (5000 of
    ImageNet-C: 5 per class), then restores (wnid, name) order. Without an id list this replaces
    RobustBench's 5000-image list, which is not shipped here; pass it with ``dataset.id_list``
    to reproduce RobustBench / CoTTA exactly.
    """
    if n is None or n >= len(ids):
        return list(ids)
    cls = {w: i for i, w in enumerate(wnids)}
    rank, seen = [], dict.fromkeys(wnids, 0)
    for sample in ids:
        wnid = sample.split("/")[0]
        rank.append((seen[wnid], cls[wnid]))
        seen[wnid] += 1
    chosen = sorted(np.lexsort(np.array(rank).T[::-1])[:n].tolist())
    return [ids[i] for i in chosen]


def decode(paths: Sequence[Path], pool: ThreadPoolExecutor | None = None) -> np.ndarray:
    """uint8 (N, 3, H, W) RGB images decoded with PIL (all must share one size).

    ``pool``: decode the files in its threads (PIL releases the GIL while it decodes, so threads
    decode in parallel without the start-up and copying costs of worker processes); the order
    of the result is the order of ``paths`` either way.
    """
    arrays = list(pool.map(_decode_one, paths)) if pool else [_decode_one(p) for p in paths]
    if len({a.shape for a in arrays}) > 1:
        raise ValueError(f"images of one batch differ in size: {sorted({a.shape for a in arrays})}")
    return np.stack(arrays).transpose(0, 3, 1, 2) if arrays else np.zeros((0, 3, 0, 0), np.uint8)


def _decode_one(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"))
    except FileNotFoundError:
        raise FileNotFoundError(f"image {path} is missing") from None
    except (OSError, SyntaxError, ValueError) as exc:  # PIL: truncated or not an image
        raise ValueError(f"image {path} cannot be decoded ({exc}); replace the file") from None


class FolderC:
    """ImageNet-C-style JPEG folders as a :class:`~ttabench.data.base.CorruptionDataset`.

    Args:
        root: Data root holding ``folder`` (or pointing into it); None: ``$TTA_DATA_ROOT``.
        folder: ``ImageNet-C`` or ``Tiny-ImageNet-C``.
        corruptions: Corruption names in stream order (default: the canonical 15).
        severity: One severity 1-5 or a list (every severity of a configured corruption can
            be read).
        n_per_domain: Samples per domain: the first ``n`` of ``id_list``, or a class-balanced
            subset (:func:`select_samples`); None: all. ImageNet-C preset: 5000.
        id_list: Text file of ``wnid/filename`` lines (RobustBench's
            ``imagenet_test_image_ids.txt`` format); its order is the dataset order.
        num_classes: Expected wnid folders (1000 / 200); other counts are read with a warning.
        name: Dataset name recorded with results.
        workers: Threads that decode a batch's JPEGs (None: the CPUs this process may use, at
            most 8; 0 or 1: decode in the calling thread). Never changes the images.

    Raises:
        FileNotFoundError: No data root, or a configured domain folder or wnid folder missing.
        ValueError: Unknown corruption, bad severity, ``n_per_domain`` or id list.
    """

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        folder: str = "ImageNet-C",
        corruptions: Sequence[str] = COMMON_CORRUPTIONS,
        severity: int | Sequence[int] = 5,
        n_per_domain: int | None = 5000,
        id_list: str | os.PathLike | None = None,
        num_classes: int = 1000,
        name: str = "imagenetc",
        workers: int | None = None,
    ) -> None:
        corruptions = check_corruptions(corruptions, ALL_CORRUPTIONS)
        if workers is None:
            workers = min(8, os.cpu_count() or 1)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"workers must be an integer >= 0 (decoding threads), not {workers!r}")
        self._pool = ThreadPoolExecutor(workers, "ttabench-decode") if workers > 1 else None
        severities = check_severities(severity)
        self.name, self.folder = name, folder
        self.dir = find_dir(root, [folder], lambda d: [d / c for c in corruptions], folder)
        missing = [
            str(self.dir / c / str(s))
            for c in corruptions
            for s in severities
            if not (self.dir / c / str(s)).is_dir()
        ]
        if missing:
            raise FileNotFoundError(
                f"{folder} in {self.dir} lacks the domain folder(s) {', '.join(missing)}. "
                f"Expected layout: {LAYOUTS[folder]}"
            )
        ref = self._reference(corruptions, severities[0])
        self.wnids = list_wnids(ref)
        if len(self.wnids) != num_classes:
            warnings.warn(
                f"{ref} has {len(self.wnids)} wnid folders, not {num_classes}: class indices are "
                f"positions among these {len(self.wnids)} sorted wnids",
                stacklevel=2,
            )
        self.num_classes = len(self.wnids)
        self.id_list = id_list
        ids = read_id_list(id_list, self.wnids) if id_list else list_samples(ref, self.wnids)
        n = check_n(n_per_domain, len(ids), f"id list {id_list}" if id_list else f"{ref}")
        self.ids = ids[:n] if id_list else select_samples(ids, self.wnids, n)
        index = {w: i for i, w in enumerate(self.wnids)}
        self._labels = np.array([index[s.split("/")[0]] for s in self.ids], dtype=np.int64)
        self.reference = ref
        self.corruptions = corruptions
        self.domains = [Domain(c, s) for c in corruptions for s in severities]
        self._checked: set[Domain] = set()
        for domain in self.domains:
            self._check_domain(domain)

    def labels(self, domain: Domain) -> np.ndarray:
        """int64 class indices of the domain's samples (from the listing; nothing decoded)."""
        self._check_domain(domain)
        return self._labels.copy()

    def images(self, domain: Domain, indices: np.ndarray) -> torch.Tensor:
        """uint8 (N, 3, H, W) images of ``indices``, decoded now (no resize: files are final)."""
        self._check_domain(domain)
        indices = checked_indices(indices, len(self.ids))
        base = self.dir / domain.corruption / str(domain.severity)
        return torch.from_numpy(decode([base / self.ids[i] for i in indices], self._pool))

    def provenance(self) -> dict[str, str]:
        """``source=files``, the folder, the sample list and a fingerprint of files used."""
        h = hashlib.sha256("\n".join(self.wnids + self.ids).encode())
        for c in self.corruptions:  # size of the first and last file of every configured domain
            for d in (dd for dd in self.domains if dd.corruption == c):
                base = self.dir / c / str(d.severity)
                for sample in (self.ids[0], self.ids[-1]):
                    size = (base / sample).stat().st_size if (base / sample).exists() else -1
                    h.update(f"{d.name}/{sample}:{size}".encode())
        record = {
            "source": "files",
            "benchmark": self.folder,
            "root": str(self.dir),
            "n_per_domain": str(len(self.ids)),
            "id_list": str(self.id_list or "none (class-balanced first files)"),
            "fingerprint": h.hexdigest()[:16],
            "profile": "published (make_imagenet_c.py, JPEG q85)",
            "seed": "none (unseeded originals)",
        }
        return record | make_c_record(self.dir)

    def _reference(self, corruptions: Sequence[str], severity: int) -> Path:
        """The domain folder whose wnids and files define the dataset (never frost if avoidable)."""
        present = sorted(
            p.name for p in self.dir.iterdir() if p.name in ALL_CORRUPTIONS and p.is_dir()
        )
        order = [c for c in corruptions if c != "frost"] + [c for c in present if c != "frost"]
        for c in [*order, "frost"]:
            if (self.dir / c / str(severity)).is_dir():
                return self.dir / c / str(severity)
        for c in order:  # any severity of a non-frost corruption
            for s in range(1, 6):
                if (self.dir / c / str(s)).is_dir():
                    return self.dir / c / str(s)
        raise FileNotFoundError(f"no domain folder in {self.dir}: {LAYOUTS[self.folder]}")

    def _check_domain(self, domain: Domain) -> None:
        """Known corruption, severity 1-5, and a folder with every reference wnid (once)."""
        if domain in self._checked:
            return
        if domain.corruption not in ALL_CORRUPTIONS:
            raise ValueError(f"unknown corruption {domain.corruption!r} in domain {domain}")
        if not 1 <= domain.severity <= 5:
            raise ValueError(f"severity must be in 1..5, got {domain.severity} ({domain})")
        base = self.dir / domain.corruption / str(domain.severity)
        if not base.is_dir():
            raise FileNotFoundError(f"domain folder {base} is missing ({LAYOUTS[self.folder]})")
        wnids = set(list_wnids(base))
        lacking = sorted(set(self.wnids) - wnids)
        if lacking:
            raise FileNotFoundError(
                f"{base} lacks {len(lacking)} of the {len(self.wnids)} wnid folders of "
                f"{self.reference}, e.g. {', '.join(lacking[:5])}"
            )
        extra = wnids - set(self.wnids)
        if extra:
            known = " (the known Tiny-ImageNet-C frost defect, hendrycks/robustness#60)"
            warnings.warn(
                f"{base} has {len(wnids)} wnid folders; dropping the {len(extra)} not in "
                f"{self.reference}{known if domain.corruption == 'frost' else ''}",
                stacklevel=3,
            )
        self._checked.add(domain)
