"""``ttabench download``: the published benchmark files, fetched only when asked, checked, and
placed where ``dataset.root`` / ``model.model_dir`` read them.

Nothing else in ttabench touches the network: a run with missing data stops with an error that
names this command. Each item is one published file:

- corruption datasets from Hendrycks & Dietterich's Zenodo records (CIFAR-10-C 2535967,
  CIFAR-100-C 3555552, Tiny-ImageNet-C 2536630), checked against the md5 that Zenodo publishes
  with the record (pinned here where other libraries publish it too: torchvision-style
  ``tgz_md5`` in torch-uncertainty and pytorch-ood; TFDS lists the same files' SHA-256);
- the clean CIFAR test sets from cs.toronto.edu (md5 of torchvision's ``datasets/cifar.py``);
- source models: RobustBench's CIFAR checkpoints (Google Drive, the ids of
  ``robustbench/model_zoo``; RobustBench publishes no checksum for them, so the file is
  checked to be a loadable state dict and its SHA-256 printed, to pin with ``model.sha256``)
  and torchvision's ResNet-50 ``IMAGENET1K_V1`` (SHA-256 prefix in its file name, as torch hub
  checks it).

Archives are extracted into a hidden staging folder with ``tarfile``'s ``data`` filter (no
absolute paths, links out of the tree or device files) and moved into place in one rename, so
an interrupted extraction never leaves a half layout. A ``.ttabench-download.json`` record in
the result says what was fetched, from where, and its digests; an existing folder without one
(your own copy) is left alone. ``--mirror URL`` fetches every file from
``URL/<host>/<path>`` instead (an institute mirror; the tests' local server); the md5s of
Zenodo records are still read from Zenodo (``--records`` names another API, for the tests), so
a mirror cannot vouch for its own files.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import shutil
import sys
import tarfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from ttabench.paths import dir_problem
from ttabench.transfer import TIMEOUT_S, USER_AGENT, Checksum, TransferError, fetch, hold

RECORD = ".ttabench-download.json"
ZENODO_RECORDS = "https://zenodo.org/api/records"
GDRIVE = "https://drive.usercontent.google.com/download?id={}&export=download&confirm=t"


@dataclass(frozen=True)
class Item:
    """One published file and where it goes.

    Attributes:
        kind: ``data`` (under the data root) or ``model`` (under the model directory).
        url: where it is published.
        target: path under the root / model directory that the readers look for; for an
            archive, its top folder (the archive must contain it).
        checksum: the published digest; None: see ``zenodo`` or (models) none published.
        zenodo: ``(record, file name)``: the md5 is read from the record's metadata.
        size: bytes of the download (for the free-space check), if known.
    """

    name: str
    what: str
    kind: str
    url: str
    target: str
    checksum: Checksum | None = None
    zenodo: tuple[str, str] | None = None
    size: int | None = None

    @property
    def archive(self) -> bool:
        return self.url.split("?")[0].endswith((".tar", ".tar.gz", ".tgz"))


def _zenodo(record: str, file: str) -> str:
    return f"https://zenodo.org/records/{record}/files/{file}?download=1"


CATALOG: dict[str, Item] = {
    item.name: item
    for item in (
        Item(
            "cifar10c", "CIFAR-10-C (Zenodo 2535967, 2.9 GB)", "data",
            _zenodo("2535967", "CIFAR-10-C.tar"), "CIFAR-10-C",
            Checksum("md5", "56bf5dcef84df0e2308c6dcbcbbd8499"), ("2535967", "CIFAR-10-C.tar"),
            2918471680,
        ),
        Item(
            "cifar100c", "CIFAR-100-C (Zenodo 3555552, 2.9 GB)", "data",
            _zenodo("3555552", "CIFAR-100-C.tar"), "CIFAR-100-C",
            Checksum("md5", "11f0ed0f1191edbf9fa23466ae6021d3"), ("3555552", "CIFAR-100-C.tar"),
            2918473216,
        ),
        Item(
            "tinyimagenetc", "Tiny-ImageNet-C (Zenodo 2536630, 1.8 GB)", "data",
            _zenodo("2536630", "Tiny-ImageNet-C.tar"), "Tiny-ImageNet-C",
            None, ("2536630", "Tiny-ImageNet-C.tar"), 1794775040,
        ),
        Item(
            "cifar10", "clean CIFAR-10 (cs.toronto.edu, 163 MB; make-c, source samples)", "data",
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-batches-py",
            Checksum("md5", "c58f30108f718f92721af3b95e74349a"), size=170498071,
        ),
        Item(
            "cifar100", "clean CIFAR-100 (cs.toronto.edu, 161 MB)", "data",
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "cifar-100-python",
            Checksum("md5", "eb9058c3a382ffc7106e4002c42a8d85"), size=169001437,
        ),
        Item(
            "wrn28_10", "RobustBench cifar10 Standard WRN-28-10 (Google Drive, 146 MB)", "model",
            GDRIVE.format("1t98aEuzeTL8P7Kpd5DIrCoCL21BNZUhC"), "cifar10/corruptions/Standard.pt",
        ),
        Item(
            "resnext29_augmix",
            "RobustBench cifar100 Hendrycks2020AugMix_ResNeXt (Google Drive, 28 MB)", "model",
            GDRIVE.format("1ocnHbvDdOBLvgNr6K7vEYL08hUdkD1Rv"),
            "cifar100/corruptions/Hendrycks2020AugMix_ResNeXt.pt",
        ),
        Item(
            "resnet50", "torchvision ResNet-50 IMAGENET1K_V1 = RobustBench Standard_R50 (98 MB)",
            "model", "https://download.pytorch.org/models/resnet50-0676ba61.pth",
            "imagenet/corruptions/Standard_R50.pt", Checksum("sha256", "0676ba61"),
            size=102530333,
        ),
    )
}  # fmt: skip


class DownloadError(RuntimeError):
    """An item that could not be fetched, checked or placed (one-line message)."""


def mirrored(url: str, mirror: str | None) -> str:
    """``url`` fetched from ``mirror`` (``<mirror>/<host>/<path>?<query>``), or as is."""
    if not mirror:
        return url
    parts = urlsplit(url)
    query = f"?{parts.query}" if parts.query else ""
    return f"{mirror.rstrip('/')}/{parts.netloc}{parts.path}{query}"


def zenodo_checksum(record: str, file: str, records: str = ZENODO_RECORDS) -> Checksum:
    """The md5 that Zenodo publishes for ``file`` of ``record``, from its records API at
    ``records`` (never from a ``--mirror``: a mirror cannot vouch for its own files)."""
    url = f"{records.rstrip('/')}/{record}"
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            meta = json.loads(response.read())
        entries = [f for f in meta["files"] if isinstance(f, dict)]
        entry = next(f for f in entries if file in (f.get("key"), f.get("filename")))
        algorithm, value = str(entry["checksum"]).split(":", 1)
        return Checksum(algorithm, value)
    except (
        urllib.error.URLError, http.client.HTTPException, OSError, ValueError, KeyError,
        TypeError, StopIteration,
    ):  # fmt: skip
        raise DownloadError(
            f"could not read the published checksum of {file} from {url}; without it the "
            "download cannot be checked, so it was not started"
        ) from None


def _free_space_check(folder: Path, item: Item) -> None:
    if item.size is None:
        return
    need = item.size * (2 if item.archive else 1)  # archive + extracted copy
    free = shutil.disk_usage(folder).free
    if free < need:
        raise DownloadError(
            f"{item.name} needs about {need / 1e9:.1f} GB free in {folder}, only "
            f"{free / 1e9:.1f} GB are"
        )


def _extract(archive: Path, base: Path, top: str, record: dict) -> None:
    """Unpack ``archive``, write ``record`` into its folder ``top`` and move that folder to
    ``base/top`` in one rename (an interruption leaves no half layout and no unrecorded one)."""
    if not hasattr(tarfile, "data_filter"):
        raise DownloadError("extracting safely needs Python >= 3.11.4 (tarfile's data filter)")
    staging = base / f".{top}.extracting"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(staging, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(f"{archive.name} could not be extracted: {exc}") from None
    if not (staging / top).is_dir() or (staging / top).is_symlink():
        found = ", ".join(sorted(p.name for p in staging.iterdir())) or "nothing"
        shutil.rmtree(staging, ignore_errors=True)
        raise DownloadError(f"{archive.name} holds {found}, not the folder {top}/ it should")
    (staging / top / RECORD).write_text(json.dumps(record, indent=2) + "\n")
    os.replace(staging / top, base / top)
    shutil.rmtree(staging, ignore_errors=True)


def _check_checkpoint(part: Path) -> None:
    """A file published without a checksum must at least be a loadable state dict (checked
    before it is renamed into place)."""
    import torch

    try:
        torch.load(part, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure means it is not a checkpoint
        part.unlink()
        name = part.name.removesuffix(".part")
        raise TransferError(
            f"{name} is not a loadable PyTorch checkpoint ({type(exc).__name__}); removed"
        ) from None


def download(
    item: Item,
    base: Path,
    mirror: str | None = None,
    progress: bool = True,
    records: str = ZENODO_RECORDS,
) -> str:
    """Fetch, check and place ``item`` under ``base``; return a one-line report. One process
    at a time handles an item under a base (``flock`` on ``.downloads/<item>.lock``).

    Raises:
        DownloadError: one line, starting with the item's name.
    """
    try:
        locks = base / ".downloads"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{item.name}.lock", "w") as lock:
            hold(lock, f"another ttabench download is fetching {item.name} into {base}")
            return _download(item, base, mirror, progress, records)
    except (TransferError, DownloadError) as exc:  # one line, named once
        raise DownloadError(f"{item.name}: {exc}") from None


def _download(item: Item, base: Path, mirror: str | None, progress: bool, records: str) -> str:
    target = base / item.target
    if target.exists():
        own = (
            not (target / RECORD).is_file()
            and not target.with_name(target.name + ".json").is_file()
        )
        return f"{item.name}: {target} already exists" + (
            " (not fetched by ttabench; left as is)" if own else ""
        )
    base.mkdir(parents=True, exist_ok=True)
    _free_space_check(base, item)
    checksum = item.checksum
    if item.zenodo is not None:
        published = zenodo_checksum(*item.zenodo, records)
        if checksum is not None and published.value != checksum.value:
            raise DownloadError(
                f"Zenodo now publishes {published} for {item.zenodo[1]}, not the "
                f"{checksum} ttabench knows; the record changed, so nothing was downloaded"
            )
        checksum = published
    url = mirrored(item.url, mirror)
    name = urlsplit(item.url).path.rsplit("/", 1)[-1]
    dest = base / ".downloads" / name if item.archive else target
    validate = _check_checkpoint if checksum is None else None
    sha256 = fetch(url, dest, checksum, progress, validate)
    record = {
        "item": item.name,
        "url": item.url,
        "fetched_from": url,
        "published_checksum": str(checksum) if checksum else None,
        "sha256": sha256,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    if item.archive:
        _extract(dest, base, item.target, record)
        dest.unlink()
    else:
        target.with_name(target.name + ".json").write_text(json.dumps(record, indent=2) + "\n")
    check = (
        f"{checksum.algorithm} matches the published {checksum.value}"
        if checksum
        else (
            f"no published checksum exists; SHA-256 {sha256} (pin it: model.sha256={sha256[:16]})"
        )
    )
    return f"{item.name}: {target} ({check})"


def _listing() -> str:
    rows = []
    for item in CATALOG.values():
        where = "<root>" if item.kind == "data" else "<model-dir>"
        if item.checksum:
            check = str(item.checksum)
        elif item.zenodo:
            check = "md5 from the Zenodo record"
        else:
            check = "none published"
        rows.append(f"  {item.name:<17} {item.what}\n{'':19}-> {where}/{item.target}  [{check}]")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ttabench download",
        description="Fetch published benchmark files (opt-in; nothing else downloads).",
        epilog="items:\n" + _listing(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("items", nargs="*", metavar="ITEM", help="items to fetch (see below)")
    parser.add_argument("--root", help="data root [$TTA_DATA_ROOT] (what dataset.root reads)")
    parser.add_argument(
        "--model-dir", help="model directory [$TTA_MODEL_DIR, else ./models] (model.model_dir)"
    )
    parser.add_argument("--mirror", help="fetch the files from <MIRROR>/<host>/<path> instead")
    parser.add_argument(
        "--records",
        default=ZENODO_RECORDS,
        help=f"Zenodo records API the published md5s are read from [{ZENODO_RECORDS}]; "
        "--mirror never changes it, so a mirror cannot vouch for its own files",
    )
    parser.add_argument("--list", action="store_true", help="list the items and exit")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.list or not args.items:
        print(_listing())
        return 0
    unknown = [name for name in args.items if name not in CATALOG]
    if unknown:
        parser.error(f"unknown item {', '.join(unknown)}; valid: {', '.join(CATALOG)}")
    root = args.root or os.environ.get("TTA_DATA_ROOT")
    model_dir = args.model_dir or os.environ.get("TTA_MODEL_DIR") or "./models"
    if root is None and any(CATALOG[n].kind == "data" for n in args.items):
        parser.error("where to put the data? give --root DIR (or set $TTA_DATA_ROOT)")
    for name in args.items:  # before anything is fetched
        flag = "--root" if CATALOG[name].kind == "data" else "--model-dir"
        problem = dir_problem(Path(root if flag == "--root" else model_dir).expanduser())
        if problem:
            parser.error(f"{flag}: {problem}")
    failed = 0
    for name in dict.fromkeys(args.items):
        item = CATALOG[name]
        base = Path(root if item.kind == "data" else model_dir).expanduser()
        try:
            report = download(item, base, args.mirror, not args.no_progress, args.records)
            print(report, flush=True)
        except (DownloadError, OSError) as exc:
            failed += 1
            message = str(exc) if isinstance(exc, DownloadError) else f"{name}: {exc}"
            print(f"ttabench download: error: {message}", file=sys.stderr, flush=True)
        except KeyboardInterrupt:
            print(
                f"ttabench download: interrupted: {name}: what was fetched is kept; run the same "
                "command again to resume",
                file=sys.stderr,
            )
            return 130
    return 1 if failed else 0
