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
        if kind == "chunked_cut":  # chunked, no length: half the bytes, then hang up (once)
            server.routes[self.path] = ("file", body)
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            half = body[: len(body) // 2]
            self.wfile.write(f"{len(half):x}\r\n".encode() + half + b"\r\n")
            self.close_connection = True  # without the closing 0-length chunk
            return
        if kind == "from_zero":  # answers a range with 206 but sends the file from byte 0
            self.send_response(206)
            self.send_header("Content-Range", f"bytes 0-{len(body) - 1}/{len(body)}")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
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


def get(item: dl.Item, base: Path, server) -> str:
    """``ttabench download`` of ``item`` from the local server, its Zenodo records API too."""
    return dl.download(item, base, server.url, False, f"{server.url}/zenodo.org/api/records")


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
    report = get(item, tmp_path, server)
    assert "md5 matches the published" in report
    folder = tmp_path / "CIFAR-10-C"
    record = json.loads((folder / dl.RECORD).read_text())
    assert record["url"] == item.url and record["published_checksum"] == str(item.checksum)
    assert not list((tmp_path / ".downloads").glob("*.tar*"))  # archive removed after extraction
    assert not list(tmp_path.glob(".*.extracting"))
    with pytest.warns(UserWarning):  # 5 x 20 rows instead of 5 x 10,000: accepted with a warning
        data = corruption_benchmark("cifar10c", root=tmp_path, corruptions=["gaussian_noise"])
    assert len(data.labels(data.domains[0])) == ROWS
    again = get(item, tmp_path, server)
    assert "already exists" in again and "not fetched by ttabench" not in again


def test_a_truncated_transfer_keeps_its_part_and_the_next_call_resumes_it(
    server, monkeypatch, tmp_path
):
    body = cifar10c_tar()
    item = serve_cifar10c(server, monkeypatch, body, kind="cut")
    with pytest.raises(dl.DownloadError, match=r"stopped at .* of .* bytes.*run the same command"):
        get(item, tmp_path, server)
    part = tmp_path / ".downloads" / "CIFAR-10-C.tar.part"
    assert part.stat().st_size == len(body) // 2
    assert not (tmp_path / "CIFAR-10-C").exists()
    get(item, tmp_path, server)
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
        get(item, tmp_path, server)
    message = str(caught.value)
    assert "published md5 is c58f30108f718f92721af3b95e74349a" in message and "\n" not in message
    assert not (tmp_path / ".downloads" / "cifar-10-python.tar.gz.part").exists()
    assert not (tmp_path / "cifar-10-batches-py").exists()


def test_a_wrong_sha256_prefix_of_a_torch_hub_file_is_refused(server, tmp_path):
    item = dl.CATALOG["resnet50"]
    server.routes[route(item)] = ("file", b"\x80\x02not resnet50")
    with pytest.raises(dl.DownloadError, match="the published sha256 is 0676ba61"):
        get(item, tmp_path, server)
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
        get(item, tmp_path, server)
    message = str(caught.value)
    assert "answered with an HTML page instead of the file" in message and "\n" not in message
    assert "Google Drive" in message
    assert not list(tmp_path.rglob("*.pt*"))  # neither the file nor a part of it


def test_a_checkpoint_without_published_checksum_is_checked_loadable(server, tmp_path):
    item = dl.CATALOG["resnext29_augmix"]
    state = io.BytesIO()
    torch.save({"classifier.weight": torch.zeros(2, 2)}, state)
    server.routes[route(item)] = ("file", state.getvalue())
    report = get(item, tmp_path, server)
    sha = hashlib.sha256(state.getvalue()).hexdigest()
    assert f"no published checksum exists; SHA-256 {sha}" in report
    path = tmp_path / "cifar100" / "corruptions" / "Hendrycks2020AugMix_ResNeXt.pt"
    assert torch.load(path, weights_only=True)["classifier.weight"].shape == (2, 2)
    assert json.loads(path.with_name(path.name + ".json").read_text())["sha256"] == sha
    item = dl.CATALOG["wrn28_10"]
    server.routes[route(item)] = ("file", b"PK\x03\x04 a broken zip, not a checkpoint")
    with pytest.raises(dl.DownloadError, match="not a loadable PyTorch checkpoint"):
        get(item, tmp_path, server)
    assert not (tmp_path / item.target).exists()


def test_http_errors_and_an_unreachable_host_are_one_line(server, tmp_path):
    with pytest.raises(dl.DownloadError, match="HTTP 404"):
        get(dl.CATALOG["cifar100"], tmp_path, server)
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
        get(item, tmp_path, server)
    del server.routes["/zenodo.org/api/records/2535967"]
    with pytest.raises(dl.DownloadError, match="could not read the published checksum"):
        get(item, tmp_path, server)
    assert not list((tmp_path / ".downloads").glob("*.tar*"))  # nothing fetched unchecked
    # Tiny-ImageNet-C: the md5 comes from its record only.
    tiny = dl.CATALOG["tinyimagenetc"]
    body = cifar10c_tar(top="Tiny-ImageNet-C")
    server.routes[route(tiny)] = ("file", body)
    md5 = hashlib.md5(body).hexdigest()
    record = {"files": [{"key": "Tiny-ImageNet-C.tar", "checksum": f"md5:{md5}"}]}
    server.routes["/zenodo.org/api/records/2536630"] = ("json", record)
    monkeypatch.setitem(dl.CATALOG, "tinyimagenetc", dataclasses.replace(tiny, size=None))
    assert md5 in get(dl.CATALOG["tinyimagenetc"], tmp_path, server)


def test_crafted_archives_are_refused_and_nothing_lands_outside_the_root(
    server, monkeypatch, tmp_path
):
    escape = tarfile.TarInfo("../../escaped.txt")
    escape.size = 3
    item = serve_cifar10c(server, monkeypatch, cifar10c_tar(extra=escape))
    root = tmp_path / "root"
    with pytest.raises(dl.DownloadError, match="could not be extracted"):
        get(item, root, server)
    assert not list(tmp_path.rglob("escaped.txt"))
    assert not (root / "CIFAR-10-C").exists() and not list(root.glob(".*.extracting"))
    item = serve_cifar10c(server, monkeypatch, cifar10c_tar(top="Something-Else"))
    with pytest.raises(dl.DownloadError, match="holds Something-Else, not the folder CIFAR-10-C"):
        get(item, root, server)


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


def test_a_transfer_without_length_that_stops_keeps_its_part(server, tmp_path):
    body = bytes(range(256)) * 400
    server.routes["/c.bin"] = ("chunked_cut", body)
    checksum = Checksum("md5", hashlib.md5(body).hexdigest())
    with pytest.raises(TransferError, match=r"stopped at .* bytes; the part is kept"):
        fetch(f"{server.url}/c.bin", tmp_path / "c.bin", checksum, progress=False)
    assert (tmp_path / "c.bin.part").stat().st_size == len(body) // 2
    fetch(f"{server.url}/c.bin", tmp_path / "c.bin", checksum, progress=False)
    assert (tmp_path / "c.bin").read_bytes() == body


def test_a_206_from_the_wrong_offset_restarts_instead_of_appending(server, tmp_path):
    body = bytes(range(256)) * 100
    server.routes["/z.bin"] = ("from_zero", body)
    (tmp_path / "z.bin.part").write_bytes(body[:1000])
    fetch(f"{server.url}/z.bin", tmp_path / "z.bin", None, progress=False)
    assert (tmp_path / "z.bin").read_bytes() == body


def test_an_html_page_on_resume_keeps_the_part(server, tmp_path):
    server.routes["/h.bin"] = ("html", b"<html>quota</html>")
    (tmp_path / "h.bin.part").write_bytes(b"\x00" * 1000)
    with pytest.raises(TransferError, match="the part of 1,000 bytes fetched before is kept"):
        fetch(f"{server.url}/h.bin", tmp_path / "h.bin", None, progress=False)
    assert (tmp_path / "h.bin.part").stat().st_size == 1000


def test_a_mirror_cannot_vouch_for_its_own_files(server, monkeypatch, tmp_path):
    """The md5 of a Zenodo record is read from the records API, not from the mirror: a
    mirror serving another archive with a matching forged record is refused."""
    tiny = dl.CATALOG["tinyimagenetc"]
    forged = cifar10c_tar(top="Tiny-ImageNet-C")
    server.routes[route(tiny)] = ("file", forged)
    server.routes["/zenodo.org/api/records/2536630"] = (
        "json",
        {
            "files": [
                {"key": "Tiny-ImageNet-C.tar", "checksum": f"md5:{hashlib.md5(forged).hexdigest()}"}
            ]
        },
    )
    monkeypatch.setitem(dl.CATALOG, "tinyimagenetc", dataclasses.replace(tiny, size=None))
    records = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Routes)
    records.routes, records.seen = {}, []
    records.routes["/2536630"] = (
        "json",
        {"files": [{"key": "Tiny-ImageNet-C.tar", "checksum": "md5:" + "1" * 32}]},
    )
    threading.Thread(target=records.serve_forever, daemon=True).start()
    try:
        api = f"http://127.0.0.1:{records.server_address[1]}"
        with pytest.raises(dl.DownloadError, match="the published md5 is 1111"):
            dl.download(dl.CATALOG["tinyimagenetc"], tmp_path, server.url, False, api)
    finally:
        records.shutdown()
        records.server_close()
    assert not (tmp_path / "Tiny-ImageNet-C").exists()
    assert "/zenodo.org/api/records/2536630" not in [path for path, _ in server.seen]


def test_a_linked_top_folder_is_refused(server, monkeypatch, tmp_path):
    link = tarfile.TarInfo("CIFAR-10-C")
    link.type, link.linkname = tarfile.SYMTYPE, "."
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.addfile(link)
    item = serve_cifar10c(server, monkeypatch, buffer.getvalue())
    with pytest.raises(dl.DownloadError, match="not the folder CIFAR-10-C"):
        get(item, tmp_path, server)
    assert not (tmp_path / "CIFAR-10-C").exists() and not list(tmp_path.glob(".*.extracting"))


def test_a_verified_archive_left_by_an_interruption_is_not_fetched_again(
    server, monkeypatch, tmp_path
):
    body = cifar10c_tar()
    item = serve_cifar10c(server, monkeypatch, body)
    (tmp_path / ".downloads").mkdir()
    (tmp_path / ".downloads" / "CIFAR-10-C.tar").write_bytes(body)  # fetched, not extracted
    assert "md5 matches" in get(item, tmp_path, server)
    assert route(item) not in [path for path, _ in server.seen]
    assert (tmp_path / "CIFAR-10-C" / dl.RECORD).is_file()


def test_one_process_at_a_time_fetches_an_item(server, monkeypatch, tmp_path):
    item = serve_cifar10c(server, monkeypatch, cifar10c_tar())
    (tmp_path / ".downloads").mkdir()
    with open(tmp_path / ".downloads" / "cifar10c.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(dl.DownloadError, match="another ttabench download is fetching"):
            get(item, tmp_path, server)
    assert "md5 matches" in get(item, tmp_path, server)


def test_an_unknown_checksum_algorithm_is_refused_before_any_transfer():
    with pytest.raises(ValueError, match="not md5 or sha256"):
        Checksum("crc32", "deadbeef")
