"""``ttabench make-c``: write generated corruption benchmarks in the published layouts.

Layouts of Hendrycks & Dietterich, ICLR 2019 ("Benchmarking Neural Network Robustness to Common
Corruptions and Perturbations"): 32 px sets as CIFAR-10-C ``.npy`` blocks (``{corruption}.npy``
of 5 x N rows, severity-major, HWC uint8, plus ``labels.npy`` uint8); ImageNet as JPEG-q85
folders ``{corruption}/{severity}/{wnid}/{val file name}``. The images are exactly those that
``dataset.source=generate`` serves (same per-sample seeds; for JPEG the same encoded bytes), so
the readers (``dataset.source=files``) serve them afterwards. A ``ttabench-make-c.json`` record of
the generator (clean source, fingerprint, profile, seed, corruption code) is written alongside
and shows up in the readers' provenance.

Example:
    ttabench make-c cifar10c --root ~/data   # ~/data/cifar-10-batches-py -> ~/data/CIFAR-10-C
    ttabench make-c imagenetc --root ~/data --n-per-domain 5000 --corruptions contrast,fog
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from ttabench.data.benchmarks import BENCHMARKS
from ttabench.data.cifar_c import MAKE_C_RECORD
from ttabench.data.clean import CleanSet, load_clean
from ttabench.data.corruptions import COMMON_CORRUPTIONS, corruption_provenance
from ttabench.data.embedded import corruption_code_hash
from ttabench.data.generated import JPEG_QUALITY, check_generatable, corrupt_samples, jpeg_bytes
from ttabench.data.roots import ENV_VAR, check_severities, data_root
from ttabench.paths import dir_problem

_CHUNK = 256


def make_c(
    benchmark: str,
    root: str | os.PathLike | None = None,
    out: str | os.PathLike | None = None,
    corruptions: list[str] | None = None,
    severities: list[int] | None = None,
    n_per_domain: int | None = None,
    id_list: str | os.PathLike | None = None,
    seed: int = 0,
    overwrite: bool = False,
    log: Callable[[str], object] = print,
) -> Path:
    """Generate ``benchmark`` from its clean test set under ``root`` and write it under ``out``.

    Args:
        benchmark: ``cifar10c``, ``cifar100c``, ``fashionmnistc``, ``embeddedc`` (npy blocks)
            or ``imagenetc`` (JPEG folders).
        root: Data root of the clean set (None: ``$TTA_DATA_ROOT``).
        out: Output data root (None: ``root``); files go to ``out/<folder>``.
        corruptions: Names (default: the canonical 15; frost needs its textures installed).
        severities: JPEG layout only (the npy layout always holds all 5).
        n_per_domain: Samples per domain (None: all).
        id_list: ImageNet only: RobustBench-style id list selecting the samples.
        seed: Corruption seed.
        overwrite: Replace existing outputs (else they are kept, and a record of other
            parameters is an error).
        log: Progress sink.

    Returns:
        The folder written (``out/<folder>``).
    """
    if benchmark not in BENCHMARKS or BENCHMARKS[benchmark].clean is None:
        valid = [b for b, spec in BENCHMARKS.items() if spec.clean]
        raise ValueError(f"make-c cannot generate {benchmark!r}; valid: {', '.join(valid)}")
    spec = BENCHMARKS[benchmark]
    corruptions = check_generatable(corruptions or list(COMMON_CORRUPTIONS))
    severities = check_severities(severities or [1, 2, 3, 4, 5])
    if spec.layout == "npy" and severities != [1, 2, 3, 4, 5]:
        raise ValueError(f"{spec.folder} files hold all 5 severities; drop --severities")
    base = data_root(out) or data_root(root)
    if base is None:
        raise ValueError(f"no output folder: give --out or --root (or set {ENV_VAR})")
    target = base / spec.folder
    problem = dir_problem(target)  # before the clean set is read: fail fast on a bad --out
    if problem:
        raise ValueError(f"--out: {problem}")
    clean = load_clean(spec.clean, root, n_per_domain, id_list, seed)
    quality = JPEG_QUALITY if spec.layout == "jpeg" else None
    record = {
        "clean": clean.name,
        "clean_fingerprint": clean.fingerprint,
        "n_per_domain": len(clean.labels),
        "id_list": str(id_list or "none"),
        "profile": clean.profile,
        "jpeg_quality": quality or "none",
        "seed": seed,
        "seeding": "per sample (seed, corruption, severity, index)",
        "corruption_code": corruption_code_hash()[:16],
        **corruption_provenance(corruptions),  # frost textures, OpenCV, JPEG codec
    }
    _check_record(target / MAKE_C_RECORD, record, overwrite)
    target.mkdir(parents=True, exist_ok=True)
    (target / MAKE_C_RECORD).write_text(json.dumps(record, indent=1) + "\n")
    if spec.layout == "npy":
        _write_labels(target / "labels.npy", clean.labels)
        for corruption in corruptions:
            path = target / f"{corruption}.npy"
            if path.exists() and not overwrite:
                log(f"keep {path}")
                continue
            _write_npy(path, clean, corruption, seed)
            log(f"wrote {path}")
    else:
        for corruption in corruptions:
            for severity in severities:
                folder = target / corruption / str(severity)
                written = _write_jpegs(folder, clean, corruption, severity, seed, overwrite)
                log(f"wrote {written} images to {folder}")
    return target


def _check_record(path: Path, record: dict, overwrite: bool) -> None:
    """Refuse to mix outputs of other parameters, or published files, into one folder."""
    if overwrite:
        return
    if not path.exists():
        if path.parent.is_dir() and any(path.parent.iterdir()):
            raise ValueError(
                f"{path.parent} already holds files not written by ttabench make-c (e.g. the "
                "published ones); choose another --out, or pass --overwrite to replace them"
            )
        return
    old = json.loads(path.read_text())
    changed = sorted(k for k in record if str(old.get(k)) != str(record[k]))
    if changed:
        raise ValueError(
            f"{path.parent} was written with other parameters ({', '.join(changed)} differ); "
            "pass --overwrite to replace it or choose another --out"
        )


def _write_labels(path: Path, labels: np.ndarray) -> None:
    dtype = np.uint8 if labels.max() < 256 else np.int64  # uint8 as published
    _atomic_save(path, np.tile(labels.astype(dtype), 5))


def _write_npy(path: Path, clean: CleanSet, corruption: str, seed: int) -> None:
    """5 severity blocks of HWC rows, filled chunk by chunk through a memory map."""
    n, size = len(clean.labels), clean.image_size
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    array = np.lib.format.open_memmap(tmp, "w+", np.uint8, (5 * n, size, size, 3))
    for severity in range(1, 6):
        for start in range(0, n, _CHUNK):
            positions = np.arange(start, min(start + _CHUNK, n))
            images = corrupt_samples(clean, positions, corruption, severity, seed)
            array[(severity - 1) * n + positions] = images.numpy().transpose(0, 2, 3, 1)
    array.flush()
    del array
    os.replace(tmp, path)


def _write_jpegs(
    folder: Path, clean: CleanSet, corruption: str, severity: int, seed: int, overwrite: bool
) -> int:
    """The domain's JPEG-q85 files under ``folder/{wnid}/{file}`` (existing ones kept)."""
    assert clean.ids is not None
    todo = [i for i, s in enumerate(clean.ids) if overwrite or not (folder / s).exists()]
    for start in range(0, len(todo), _CHUNK):
        positions = np.array(todo[start : start + _CHUNK], dtype=np.int64)
        images = corrupt_samples(clean, positions, corruption, severity, seed).numpy()
        for position, image in zip(positions, images, strict=True):
            path = folder / clean.ids[position]
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_bytes(jpeg_bytes(image, JPEG_QUALITY))
            os.replace(tmp, path)
    return len(todo)


def _atomic_save(path: Path, array: np.ndarray) -> None:
    tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
    np.save(tmp, array)
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    """``ttabench make-c`` entry point; errors print one paragraph and return 2."""
    parser = argparse.ArgumentParser(
        prog="ttabench make-c",
        description="Generate a corruption benchmark from its clean test set and write it in "
        "the published layout (CIFAR-10-C .npy blocks, ImageNet-C JPEG-q85 folders), so that "
        "dataset.source=files reads it.",
    )
    generatable = [b for b, spec in BENCHMARKS.items() if spec.clean]
    parser.add_argument("benchmark", choices=generatable)
    parser.add_argument("--root", help=f"data root of the clean set (default ${ENV_VAR})")
    parser.add_argument("--out", help="output data root (default: --root)")
    parser.add_argument(
        "--corruptions", help="comma-separated names (default: the common 15 in canonical order)"
    )
    parser.add_argument("--severities", help="comma-separated, JPEG layout only (default 1-5)")
    parser.add_argument("--n-per-domain", type=int, help="samples per domain (default: all)")
    parser.add_argument("--id-list", help="ImageNet: RobustBench-style wnid/file list")
    parser.add_argument("--seed", type=int, default=0, help="corruption seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    args = parser.parse_args(argv)
    try:
        target = make_c(
            args.benchmark,
            args.root,
            args.out,
            args.corruptions.split(",") if args.corruptions else None,
            _severities(args.severities),
            args.n_per_domain,
            args.id_list,
            args.seed,
            args.overwrite,
            log=lambda line: print(line, file=sys.stderr),
        )
    except (ValueError, FileNotFoundError) as exc:
        print(f"ttabench make-c: error: {exc}", file=sys.stderr)
        return 2
    print(f"written: {target}")
    return 0


def _severities(text: str | None) -> list[int] | None:
    """``--severities 1,3,5`` as integers, or a ValueError naming the option."""
    if not text:
        return None
    try:
        return [int(s) for s in text.split(",")]
    except ValueError:
        raise ValueError(f"--severities takes comma-separated integers 1-5, not {text!r}") from None
