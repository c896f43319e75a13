"""One HTTP(S) file transfer for ``ttabench download``: resumable, checked, never half-kept.

The bytes go to ``<dest>.part``; an interrupted transfer (dropped connection, Ctrl-C, a server
that sends fewer bytes than it announced) keeps that file, and the next call asks the server
for the rest (``Range: bytes=<size>-``): 206 appends, 200 (no range support) starts over, 416
means the part is already whole. Only a file whose checksum matches the published one is
renamed to ``dest``; a mismatch removes the part (its bytes are not the published file, so
resuming from them could never succeed). An HTML answer where a file was expected (Google
Drive's quota or virus-scan page, a login or error page) is recognised by its content type or
its first bytes and reported in one line, and nothing of it is kept. One process at a time
writes a given part (``flock``); a second one is told so instead of interleaving bytes.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20
TIMEOUT_S = 60
USER_AGENT = "ttabench-download (+https://pypi.org/project/ttabench)"
_HTML_STARTS = (b"<!doctype html", b"<html", b"<head", b"<!--")


class TransferError(RuntimeError):
    """A transfer that did not give the published file; the message is one line and says
    whether rerunning resumes it."""


@dataclass(frozen=True)
class Checksum:
    """A published digest: ``algorithm`` (md5 or sha256) and hex ``value``; a value shorter
    than the full digest is a prefix (torch hub's file names carry the first 8 hex digits)."""

    algorithm: str
    value: str

    def __post_init__(self) -> None:
        if self.algorithm not in ("md5", "sha256"):
            raise ValueError(f"checksum algorithm {self.algorithm!r} is not md5 or sha256")

    def matches(self, digest: str) -> bool:
        return len(self.value) >= 8 and digest.startswith(self.value.lower())

    def __str__(self) -> str:
        return f"{self.algorithm} {self.value}"


def hold(handle, busy: str) -> None:
    """An exclusive ``flock`` on the open file ``handle``, or :class:`TransferError` ``busy`` at
    once (another process holds it; the kernel drops a dead process's lock)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise TransferError(busy) from None


def file_digest(path: Path, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def looks_like_html(content_type: str, head: bytes) -> bool:
    """Whether an answer is a web page: by its Content-Type or its first bytes."""
    if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    return head.lstrip()[:16].lower().startswith(_HTML_STARTS)


def fetch(
    url: str,
    dest: Path,
    checksum: Checksum | None,
    progress: bool = True,
    validate: Callable[[Path], None] | None = None,
) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and check it; return its SHA-256.

    A ``dest`` already there that matches ``checksum`` is kept (a rerun after an interrupted
    extraction does not fetch it again). ``validate(part)`` may reject the bytes before they
    are renamed into place (raise :class:`TransferError`; e.g. a checkpoint published without a
    checksum must at least load).

    Raises:
        TransferError: unreachable host, HTTP error, HTML instead of the file, a transfer that
            stopped early (the part is kept: rerun to resume), a checksum mismatch (the part is
            removed), or another process writing the same part.
    """
    if checksum is not None and dest.is_file():
        digest = file_digest(dest, checksum.algorithm)
        if checksum.matches(digest):
            return digest if checksum.algorithm == "sha256" else file_digest(dest, "sha256")
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "ab") as handle:
        hold(handle, f"{part} is being written by another ttabench download; wait for it")
        _transfer(url, part, handle, progress)
        algorithm = checksum.algorithm if checksum else "sha256"
        digest = file_digest(part, algorithm)
        if checksum is not None and not checksum.matches(digest):
            part.unlink()
            raise TransferError(
                f"{dest.name}: {algorithm} is {digest}, but the published {algorithm} is "
                f"{checksum.value}: the file is damaged or not the published one (removed; run "
                "again to download it afresh)"
            )
        if validate is not None:
            validate(part)
        sha256 = digest if algorithm == "sha256" else file_digest(part, "sha256")
        os.replace(part, dest)  # still under the lock: a second process never sees half a step
    return sha256


def _range_start(response) -> int | None:
    """The first byte of a 206 answer (``Content-Range: bytes START-END/TOTAL``), if stated."""
    value = response.headers.get("Content-Range", "")
    if value.startswith("bytes ") and "-" in value:
        start = value[6:].split("-", 1)[0].strip()
        return int(start) if start.isdigit() else None
    return None


def _transfer(url: str, part: Path, handle, progress: bool) -> None:
    have = part.stat().st_size
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part is whole
            return
        raise TransferError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, ValueError, OSError) as exc:
        reason = getattr(exc, "reason", None) or f"{type(exc).__name__}: {exc}"
        raise TransferError(f"could not reach {url}: {reason}") from None
    with response:
        try:
            head = response.read(CHUNK)
            stopped = False
        except (http.client.HTTPException, ConnectionError, TimeoutError, OSError) as exc:
            head, stopped = getattr(exc, "partial", b""), True  # reported below
        continuing = bool(have) and response.status == 206  # bytes of the file's middle
        if looks_like_html(response.headers.get("Content-Type", ""), b"" if continuing else head):
            kept = f"; the part of {have:,} bytes fetched before is kept" if have else ""
            if not have:
                part.unlink()
            raise TransferError(
                f"{url} answered with an HTML page instead of the file (Google Drive does this "
                "when a file's download quota is exceeded or it asks to confirm a virus scan; "
                f"also login and error pages){kept}; nothing of the page was saved. Try again "
                "later, or download the file in a browser and put it where `ttabench download "
                "--list` says"
            )
        if have and (response.status != 206 or _range_start(response) != have):
            handle.truncate(0)  # the range was ignored or answered from elsewhere: start over
            have = 0
        total = response.headers.get("Content-Length")
        total = have + int(total) if total and total.isdigit() else None
        written = have
        with tqdm(
            total=total, initial=have, unit="B", unit_scale=True, disable=not progress,
            desc=part.name.removesuffix(".part"), mininterval=1.0,
        ) as bar:  # fmt: skip
            try:
                chunk = head
                while chunk:
                    handle.write(chunk)
                    written += len(chunk)
                    bar.update(len(chunk))
                    chunk = response.read(CHUNK) if not stopped else b""
            except (http.client.HTTPException, ConnectionError, TimeoutError, OSError):
                stopped = True  # reported below, with what was kept
            finally:
                handle.flush()
        if stopped or (total is not None and written < total):
            of = f" of {total:,}" if total is not None else ""
            raise TransferError(
                f"{url}: the transfer stopped at {written:,}{of} bytes; the part is kept in "
                f"{part}: run the same command again to resume"
            )
