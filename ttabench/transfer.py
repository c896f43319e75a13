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

    def matches(self, digest: str) -> bool:
        return len(self.value) >= 8 and digest.startswith(self.value.lower())

    def __str__(self) -> str:
        return f"{self.algorithm} {self.value}"


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


def fetch(url: str, dest: Path, checksum: Checksum | None, progress: bool = True) -> str:
    """Download ``url`` to ``dest`` (resuming ``dest.part``) and check it; return its SHA-256.

    Raises:
        TransferError: unreachable host, HTTP error, HTML instead of the file, a transfer that
            stopped early (the part is kept: rerun to resume), a checksum mismatch (the part is
            removed), or another process writing the same part.
    """
    part = dest.with_name(dest.name + ".part")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(part, "ab") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TransferError(
                f"{part} is being written by another ttabench download; wait for it to finish"
            ) from None
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
    sha256 = digest if algorithm == "sha256" else file_digest(part, "sha256")
    os.replace(part, dest)
    return sha256


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
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise TransferError(f"could not reach {url}: {reason}") from None
    with response:
        if have and response.status != 206:  # the server ignored the range: start over
            handle.truncate(0)
            have = 0
        total = response.headers.get("Content-Length")
        total = have + int(total) if total and total.isdigit() else None
        try:
            head = response.read(CHUNK)
        except (http.client.IncompleteRead, ConnectionError, TimeoutError, OSError) as exc:
            head = getattr(exc, "partial", b"")  # the stop is reported below
        if not have and looks_like_html(response.headers.get("Content-Type", ""), head):
            handle.truncate(0)
            part.unlink()
            raise TransferError(
                f"{url} answered with an HTML page instead of the file (Google Drive does this "
                "when a file's download quota is exceeded or it asks to confirm a virus scan; "
                "also login and error pages): nothing was saved. Try again later, or download "
                "the file in a browser and put it where `ttabench download --list` says"
            )
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
                    chunk = response.read(CHUNK)
            except (TimeoutError, http.client.IncompleteRead, ConnectionError, OSError):
                pass  # reported below, with what was kept
            finally:
                handle.flush()
        if total is not None and written < total:
            raise TransferError(
                f"{url}: the transfer stopped at {written:,} of {total:,} bytes; the part is "
                f"kept in {part}: run the same command again to resume"
            )
