"""``ttabench download`` against a local HTTP server on 127.0.0.1 (``--mirror``), serving small
archives in the real formats: a whole transfer, a truncated one resumed, a server without range
support, a wrong checksum, HTML answers, HTTP errors, an unreachable host, a changed Zenodo
record, crafted archives, checkpoints without a published checksum, and two writers at once."""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import http.server
import io
import json
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from ttabench import download as dl
from ttabench.data.benchmarks import corruption_benchmark
from ttabench.transfer import Checksum, TransferError, fetch

ROWS = 20  # images per severity: the CIFAR-10-C layout with 5 x 20 rows


class Routes(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path]`` = (kind, payload); records every request's headers."""

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        server = self.server
        server.seen.append((self.path, dict(self.headers)))
        kind, body = server.routes.get(self.path, ("missing", b""))
        if kind == "missing":
            self.send_error(404, "Not Found")
            return
        if kind == "html":
            self._send(200, body, "text/html; charset=utf-8")
            return
        if kind == "json":
            self._send(200, json.dumps(body).encode(), "application/json")
            return
        if kind == "cut":  # announce everything, send the first half, hang up (once)
            server.routes[self.path] = ("file", body)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        start = 0
        ranged = self.headers.get("Range")
        if kind == "file" and ranged:
            start = int(ranged.removeprefix("bytes=").rstrip("-"))
            if start >= len(body):
                self.send_error(416, "Range Not Satisfiable")
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:  # "file" without a range, or "norange": always the whole file
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        self.wfile.write(body[start:])

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Routes)
    httpd.routes, httpd.seen = {}, []
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def route(item: dl.Item) -> str:
    """The path under the mirror at which ``item`` is requested."""
    return dl.mirrored(item.url, "http://x").removeprefix("http://x")


def cifar10c_tar(top: str = "CIFAR-10-C", extra: tarfile.TarInfo | None = None) -> bytes:
    """A CIFAR-10-C.tar in the published layout: ``CIFAR-10-C/{labels,gaussian_noise}.npy``,
    5 severities x 20 rows."""
    rng = np.random.default_rng(0)
    files = {
        "labels.npy": np.tile(np.arange(ROWS, dtype=np.uint8) % 10, 5),
        "gaussian_noise.npy": rng.integers(0, 256, (5 * ROWS, 32, 32, 3), dtype=np.uint8),
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, array in files.items():
            data = io.BytesIO()
            np.save(data, array)
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data.getvalue())
            tar.addfile(info, io.BytesIO(data.getvalue()))
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x" * extra.size))
    return buffer.getvalue()


def serve_cifar10c(server, monkeypatch, body: bytes, kind: str = "file") -> dl.Item:
    """Serve ``body`` as CIFAR-10-C.tar with a Zenodo record publishing its md5."""
    md5 = hashlib.md5(body).hexdigest()
    item = dataclasses.replace(dl.CATALOG["cifar10c"], checksum=Checksum("md5", md5), size=None)
    monkeypatch.setitem(dl.CATALOG, "cifar10c", item)
    server.routes[route(item)] = (kind, body)
    record = {"files": [{"key": "CIFAR-10-C.tar", "checksum": f"md5:{md5}"}]}
    server.routes["/zenodo.org/api/records/2535967"] = ("json", record)
    return item


def test_a_zenodo_dataset_is_fetched_checked_extracted_and_then_read(server, monkeypatch, tmp_path):
    item = serve_cifar10c(server, monkeypatch, cifar10c_tar())
    report = dl.download(item, tmp_path, server.url, progress=False)
    assert "md5 matches the published" in report
    folder = tmp_path / "CIFAR-10-C"
    record = json.loads((folder / dl.RECORD).read_text())
    assert record["url"] == item.url and record["published_checksum"] == str(item.checksum)
    assert not list((tmp_path / ".downloads").iterdir())  # archive removed after extraction
    assert not list(tmp_path.glob(".*.extracting"))
    with pytest.warns(UserWarning):  # 5 x 20 rows instead of 5 x 10,000: accepted with a warning
        data = corruption_benchmark("cifar10c", root=tmp_path, corruptions=["gaussian_noise"])
    assert len(data.labels(data.domains[0])) == ROWS
    again = dl.download(item, tmp_path, server.url, progress=False)
    assert "already exists" in again and "not fetched by ttabench" not in again


def test_a_truncated_transfer_keeps_its_part_and_the_next_call_resumes_it(
    server, monkeypatch, tmp_path
):
    body = cifar10c_tar()
    item = serve_cifar10c(server, monkeypatch, body, kind="cut")
    with pytest.raises(dl.DownloadError, match=r"stopped at .* of .* bytes.*run the same command"):
        dl.download(item, tmp_path, server.url, progress=False)
    part = tmp_path / ".downloads" / "CIFAR-10-C.tar.part"
    assert part.stat().st_size == len(body) // 2
    assert not (tmp_path / "CIFAR-10-C").exists()
    dl.download(item, tmp_path, server.url, progress=False)
    ranges = [h.get("Range") for path, h in server.seen if path == route(item)]
    assert ranges == [None, f"bytes={len(body) // 2}-"]  # the second request asked for the rest
    assert (tmp_path / "CIFAR-10-C" / "gaussian_noise.npy").is_file() and not part.exists()


def test_a_server_without_range_support_restarts_the_file(server, tmp_path):
    body = b"ttabench" * 1000
    server.routes["/f.bin"] = ("norange", body)
    part = tmp_path / "f.bin.part"
    part.write_bytes(b"stale bytes from elsewhere")
    fetch(f"{server.url}/f.bin", tmp_path / "f.bin", Checksum("md5", hashlib.md5(body).hexdigest()))
    assert (tmp_path / "f.bin").read_bytes() == body


def test_a_wrong_checksum_removes_the_file_and_says_so(server, tmp_path):
    item = dl.CATALOG["cifar10"]  # the real published md5 against a small stand-in archive
    server.routes[route(item)] = ("file", b"not the CIFAR-10 archive")
    with pytest.raises(dl.DownloadError) as caught:
        dl.download(item, tmp_path, server.url, progress=False)
    message = str(caught.value)
    assert "published md5 is c58f30108f718f92721af3b95e74349a" in message and "\n" not in message
    assert not (tmp_path / ".downloads" / "cifar-10-python.tar.gz.part").exists()
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_a_wrong_sha256_prefix_of_a_torch_hub_file_is_refused(server, tmp_path):
    item = dl.CATALOG["resnet50"]
    server.routes[route(item)] = ("file", b"\x80\x02not resnet50")
    with pytest.raises(dl.DownloadError, match="the published sha256 is 0676ba61"):
        dl.download(item, tmp_path, server.url, progress=False)
    assert not (tmp_path / item.target).exists()


@pytest.mark.parametrize(
    "kind, body",
    [
        ("html", b"<html><body>Google Drive - Quota exceeded</body></html>"),
        ("file", b"\n  <!DOCTYPE html><html><head><title>Virus scan warning</title>"),
    ],
)
def test_an_html_page_instead_of_a_file_is_reported_in_one_line(server, tmp_path, kind, body):
    """Google Drive's known failure: its quota / virus-scan page arrives where the checkpoint
    should (by content type, or by the first bytes when the type says binary)."""
    item = dl.CATALOG["wrn28_10"]
    server.routes[route(item)] = (kind, body)
    with pytest.raises(dl.DownloadError) as caught:
        dl.download(item, tmp_path, server.url, progress=False)
    message = str(caught.value)
    assert "answered with an HTML page instead of the file" in message and "\n" not in message
    assert "Google Drive" in message
    assert not list(tmp_path.rglob("*.pt*"))  # neither the file nor a part of it


def test_a_checkpoint_without_published_checksum_is_checked_loadable(server, tmp_path):
    item = dl.CATALOG["resnext29_augmix"]
    state = io.BytesIO()
    torch.save({"classifier.weight": torch.zeros(2, 2)}, state)
    server.routes[route(item)] = ("file", state.getvalue())
    report = dl.download(item, tmp_path, server.url, progress=False)
    sha = hashlib.sha256(state.getvalue()).hexdigest()
    assert f"no published checksum exists; SHA-256 {sha}" in report
    path = tmp_path / "cifar100" / "corruptions" / "Hendrycks2020AugMix_ResNeXt.pt"
    assert torch.load(path, weights_only=True)["classifier.weight"].shape == (2, 2)
    assert json.loads(path.with_name(path.name + ".json").read_text())["sha256"] == sha
    item = dl.CATALOG["wrn28_10"]
    server.routes[route(item)] = ("file", b"PK\x03\x04 a broken zip, not a checkpoint")
    with pytest.raises(dl.DownloadError, match="not a loadable PyTorch checkpoint"):
        dl.download(item, tmp_path, server.url, progress=False)
    assert not (tmp_path / item.target).exists()


def test_http_errors_and_an_unreachable_host_are_one_line(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        dl.download(dl.CATALOG["cifar100"], tmp_path, server.url, progress=False)
    closed = http.server.HTTPServer(("127.0.0.1", 0), Routes)
    port = closed.server_address[1]
    closed.server_close()
    with pytest.raises(dl.DownloadError, match="could not reach"):
        dl.download(dl.CATALOG["cifar100"], tmp_path, f"http://127.0.0.1:{port}", progress=False)


def test_the_zenodo_checksum_is_read_from_the_record_and_a_changed_record_is_refused(
    server, monkeypatch, tmp_path
):
    item = serve_cifar10c(server, monkeypatch, cifar10c_tar())
    other = {"files": [{"key": "CIFAR-10-C.tar", "checksum": "md5:" + "0" * 32}]}
    server.routes["/zenodo.org/api/records/2535967"] = ("json", other)
    with pytest.raises(dl.DownloadError, match="Zenodo now publishes md5 0000"):
        dl.download(item, tmp_path, server.url, progress=False)
    del server.routes["/zenodo.org/api/records/2535967"]
    with pytest.raises(dl.DownloadError, match="could not read the published checksum"):
        dl.download(item, tmp_path, server.url, progress=False)
    assert not (tmp_path / ".downloads").exists()  # nothing started without a checksum
    # Tiny-ImageNet-C: the md5 comes from its record only.
    tiny = dl.CATALOG["tinyimagenetc"]
    body = cifar10c_tar(top="Tiny-ImageNet-C")
    server.routes[route(tiny)] = ("file", body)
    md5 = hashlib.md5(body).hexdigest()
    record = {"files": [{"key": "Tiny-ImageNet-C.tar", "checksum": f"md5:{md5}"}]}
    server.routes["/zenodo.org/api/records/2536630"] = ("json", record)
    monkeypatch.setitem(dl.CATALOG, "tinyimagenetc", dataclasses.replace(tiny, size=None))
    assert md5 in dl.download(dl.CATALOG["tinyimagenetc"], tmp_path, server.url, progress=False)


def test_crafted_archives_are_refused_and_nothing_lands_outside_the_root(
    server, monkeypatch, tmp_path
):
    escape = tarfile.TarInfo("../../escaped.txt")
    escape.size = 3
    item = serve_cifar10c(server, monkeypatch, cifar10c_tar(extra=escape))
    root = tmp_path / "root"
    with pytest.raises(dl.DownloadError, match="could not be extracted"):
        dl.download(item, root, server.url, progress=False)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (root / "CIFAR-10-C").exists() and not list(root.glob(".*.extracting"))
    item = serve_cifar10c(server, monkeypatch, cifar10c_tar(top="Something-Else"))
    with pytest.raises(dl.DownloadError, match="holds Something-Else, not the folder CIFAR-10-C"):
        dl.download(item, root, server.url, progress=False)


def test_a_users_own_copy_is_left_alone(tmp_path):
    (tmp_path / "CIFAR-10-C").mkdir()
    report = dl.download(dl.CATALOG["cifar10c"], tmp_path, "http://127.0.0.1:9", progress=False)
    assert "not fetched by ttabench; left as is" in report


def test_two_writers_of_one_file_do_not_interleave(server, tmp_path):
    server.routes["/f.bin"] = ("file", b"abc")
    part = tmp_path / "f.bin.part"
    with open(part, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(TransferError, match="being written by another ttabench download"):
            fetch(f"{server.url}/f.bin", tmp_path / "f.bin", None, progress=False)
    assert fetch(f"{server.url}/f.bin", tmp_path / "f.bin", None, progress=False)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ttabench.cli", "download", *args],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def test_cli_errors_are_one_line_with_the_exit_code(server, tmp_path):
    bad = cli("cifar10c", "nonsense", "--root", str(tmp_path))
    assert bad.returncode == 2 and "unknown item nonsense; valid: cifar10c" in bad.stderr
    no_root = cli("cifar10", env={"PATH": "/usr/bin:/bin"})
    assert no_root.returncode == 2 and "give --root DIR (or set $TTA_DATA_ROOT)" in no_root.stderr
    item = dl.CATALOG["cifar10"]
    server.routes[route(item)] = ("file", b"not the CIFAR-10 archive")
    failed = cli("cifar10", "--root", str(tmp_path), "--mirror", server.url, "--no-progress")
    assert failed.returncode == 1 and "Traceback" not in failed.stderr
    lines = failed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ttabench download: error: cifar10: ")
    listing = cli("--list")
    assert (
        listing.returncode == 0
        and "-> <model-dir>/cifar10/corruptions/Standard.pt" in listing.stdout
    )


def test_a_missing_data_root_names_the_download_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="ttabench download cifar10c --root DIR"):
        corruption_benchmark("cifar10c", root=tmp_path / "nowhere")
    assert Path(dl.__file__).is_file()
