"""The downloader against a server on 127.0.0.1 run by the test: resume, corruption, no network."""
import http.server
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

from deepart.core.errors import DataError
from deepart.data import download
from deepart.data.download import DownloadInterrupted, download_images, download_labels, extract_images, fetch
from tests.conftest import REPO, SHARED


class Server:
    """Serves `files` (url path -> bytes) with Range support; `cut_after` bytes into the first `cuts`
    responses it closes the connection (a dropped download)."""

    def __init__(self, files: dict[str, bytes], cut_after: int | None = None, cuts: int = 1):
        self.files, self.cut_after, self.cuts = files, cut_after, cuts
        self.ranges: list[str | None] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                rng = self.headers.get("Range")
                server.ranges.append(rng)
                start = int(rng.split("=")[1].split("-")[0]) if rng else 0
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                payload = body[start:]
                if server.cut_after is not None and server.cuts > 0:
                    server.cuts -= 1
                    self.wfile.write(payload[:server.cut_after])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(payload)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def make(files, **kw) -> Server:
        servers.append(Server(files, **kw))
        return servers[-1]

    yield make
    for s in servers:
        s.close()


def make_zip(path: Path, n: int = 6) -> bytes:
    """A small archive shaped like the ArtGAN one: wikiart/<Style>/<file>.jpg (stored, so bytes are raw)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for i in range(n):
            zf.writestr(f"wikiart/Style{i % 2}/painting-{i}.jpg", bytes([i]) * 5000)
        zf.writestr("wikiart/Impressionism/joaquã\xadn-sorolla_x.jpg", b"mojibake name" * 100)
    return path.read_bytes()


def test_interrupted_download_resumes_with_range(tmp_path, serve):
    body = bytes(range(256)) * 4000  # ~1 MB
    server = serve({"/big.bin": body}, cut_after=300_000)
    dest = tmp_path / "big.bin"
    with pytest.raises(DownloadInterrupted, match="run the same command again to resume"):
        fetch(server.url + "/big.bin", dest, retries=0, progress=False)
    part = tmp_path / "big.bin.part"
    assert not dest.exists() and part.stat().st_size == 300_000  # nothing at the final name yet
    fetch(server.url + "/big.bin", dest, retries=0, progress=False)
    assert dest.read_bytes() == body and not part.exists()
    assert server.ranges == [None, "bytes=300000-"]


def test_dropped_connection_is_retried_automatically(tmp_path, serve):
    body = b"x" * 500_000
    server = serve({"/f": body}, cut_after=100_000, cuts=2)
    fetch(server.url + "/f", tmp_path / "f", retries=3, progress=False)
    assert (tmp_path / "f").read_bytes() == body
    assert server.ranges == [None, "bytes=100000-", "bytes=200000-"]


def test_complete_or_oversized_part_file(tmp_path, serve):
    body = b"y" * 1000
    server = serve({"/f": body})
    (tmp_path / "f.part").write_bytes(body)  # finished before the rename: nothing left to fetch
    fetch(server.url + "/f", tmp_path / "f", retries=0, progress=False)
    assert (tmp_path / "f").read_bytes() == body
    (tmp_path / "g.part").write_bytes(b"z" * 1500)  # longer than the file: not trusted, fetched again
    server.files["/g"] = body
    fetch(server.url + "/g", tmp_path / "g", retries=1, progress=False)
    assert (tmp_path / "g").read_bytes() == body and server.ranges[-2:] == ["bytes=1500-", None]


def test_images_download_and_extract(tmp_path, serve):
    archive = make_zip(tmp_path / "src.zip")
    server = serve({"/wikiart.zip": archive}, cut_after=len(archive) // 2)
    root = tmp_path / "wikiart"
    with pytest.raises(DownloadInterrupted):
        download_images(root, server.url + "/wikiart.zip", retries=0, progress=False)
    assert not (root / "images").exists() and (root / "wikiart.zip.part").is_file()
    images = download_images(root, server.url + "/wikiart.zip", retries=0, progress=False)
    assert {p.relative_to(images).as_posix() for p in images.rglob("*.jpg")} == {
        "Impressionism/joaquã\xadn-sorolla_x.jpg", *(f"Style{i % 2}/painting-{i}.jpg" for i in range(6))}
    assert (images / "Style0" / "painting-2.jpg").read_bytes() == bytes([2]) * 5000
    assert not (root / "wikiart.zip").exists()  # removed after a successful extraction by default
    assert not list(root.glob(".*extracting"))


def test_bad_crc_member_is_listed_and_the_rest_extracted(tmp_path, capsys):
    data = bytearray(make_zip(tmp_path / "src.zip"))
    offset = data.index(bytes([3]) * 5000)  # inside the stored bytes of painting-3.jpg
    data[offset + 10] ^= 0xFF
    root = tmp_path / "wikiart"
    root.mkdir()
    (root / "wikiart.zip").write_bytes(bytes(data))
    images = download_images(root, "http://127.0.0.1:9/unused", progress=False)
    assert "extracted 6 of 7 files; 1 damaged (listed in" in capsys.readouterr().out
    assert not (images / "Style1" / "painting-3.jpg").exists()
    assert (images / "Style1" / "painting-1.jpg").read_bytes() == bytes([1]) * 5000
    assert "painting-3.jpg,bad CRC-32" in (root / "damaged_images.csv").read_text()
    assert not list(root.glob(".images.partial"))


def test_truncated_archive_is_refused_with_resume_advice(tmp_path):
    data = make_zip(tmp_path / "src.zip")
    (tmp_path / "cut.zip").write_bytes(data[: len(data) - 200])
    with pytest.raises(DataError, match="nothing was extracted.*did not finish.*run it again to resume"):
        extract_images(tmp_path / "cut.zip", tmp_path, progress=False)
    assert not (tmp_path / "images").exists() and not (tmp_path / ".extraction.json").exists()


def test_sha256_mismatch_is_reported(tmp_path, capsys):
    root = tmp_path / "w"
    root.mkdir()
    make_zip(root / "wikiart.zip")
    download_images(root, "http://127.0.0.1:9/unused", sha256="0" * 64, progress=False)
    out = capsys.readouterr().out
    assert "SHA-256" in out and "differs from the expected" in out and "extracted 7 of 7 files" in out


def test_cp437_member_names_are_read_as_utf8(tmp_path):
    info = zipfile.ZipInfo("wikiart/A/eug\u00e8ne.jpg")
    info.flag_bits &= ~0x800
    # what zipfile shows for an archive that stored UTF-8 bytes without the UTF-8 flag
    info.filename = "wikiart/A/eug\u00e8ne.jpg".encode("utf-8").decode("cp437")
    assert download.member_name(info) == "wikiart/A/eug\u00e8ne.jpg"


def test_no_network_gives_manual_instructions(tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DataError, match=r"(?s)cannot reach .*Manual download.*style_train\.csv"):
        download_labels(tmp_path, f"http://127.0.0.1:{port}", progress=False)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not (SHARED / "wikiart" / "style_train.csv").is_file(), reason="../shared/wikiart not present")
def test_label_files_download_under_upstream_names(tmp_path, serve):
    upstream = {}
    for name, remotes in download.LABEL_FILES.items():
        upstream["/" + remotes[-1].replace(" ", "%20")] = (SHARED / "wikiart" / name).read_bytes()
    server = serve(upstream)
    saved = download_labels(tmp_path, server.url, progress=False)
    assert [p.name for p in saved] == list(download.LABEL_FILES)
    for p in saved:
        assert p.read_bytes() == (SHARED / "wikiart" / p.name).read_bytes()


def test_wrong_label_file_is_refused(tmp_path, serve, monkeypatch):
    monkeypatch.setattr(download, "LABEL_FILES", {"style_class.txt": ["Style/style_class.txt"]})
    server = serve({"/Style/style_class.txt": b"0 A\n1 B\n"})
    with pytest.raises(DataError, match="expected 27 rows/classes as published, got 2"):
        download_labels(tmp_path, server.url, progress=False)
    assert not (tmp_path / "style_class.txt").exists()


def test_cli_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "deepart.data.download", "wikiart", "--root", str(tmp_path),
                           "--labels-url", "http://127.0.0.1:9", "--no-progress"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Manual download" in proc.stderr and "Traceback" not in proc.stderr


def test_extract_replaces_nothing_on_failure(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    (images / "keep.jpg").write_bytes(b"k")
    (tmp_path / "bad.zip").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="nothing was extracted"):
        extract_images(tmp_path / "bad.zip", tmp_path, progress=False)
    assert (images / "keep.jpg").read_bytes() == b"k"
    shutil.rmtree(images)
