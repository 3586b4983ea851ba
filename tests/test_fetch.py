"""`glide-minimal fetch`: download, resume after a dropped connection, sha256 verification, HTTP errors
(glide_minimal/fetch.py), against a loopback HTTP server this file starts (with its own Range support)."""
from __future__ import annotations

import hashlib
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from glide_minimal.cli import main
from glide_minimal.fetch import ChecksumError, DownloadError, fetch

PAYLOAD = bytes(range(256)) * 40  # 10,240 bytes: several reads, and a drop point inside the file
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class Handler(BaseHTTPRequestHandler):
    """GET /model.pt serves PAYLOAD: 200 for the whole file, 206 for 'Range: bytes=N-', 416 past the end.
    Anything else is 404. With server.drop_after = n, the next answer announces its full length, sends n
    bytes and closes the connection (a transfer broken midway)."""

    def do_GET(self):
        server = self.server
        server.ranges.append(self.headers.get("Range"))
        if self.path != "/model.pt":
            self.send_error(404, "Not Found")
            return
        start, wanted = 0, self.headers.get("Range")
        if wanted and server.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1])
            if start >= len(PAYLOAD):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(PAYLOAD)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        else:
            self.send_response(200)
        body = PAYLOAD[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.drop_after is not None:
            body, server.drop_after = body[:server.drop_after], None
            self.close_connection = True
        self.wfile.write(body)

    def log_message(self, *args):  # keep the test output quiet
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.ranges, httpd.drop_after, httpd.honour_range = [], None, True
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}/model.pt"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def part_of(out: Path) -> Path:
    return out.with_name(out.name + ".part")


def test_fetch_downloads_and_verifies(server, tmp_path):
    out = fetch(server.url, tmp_path / "models" / "base.pt", DIGEST, progress=False)
    assert out.read_bytes() == PAYLOAD
    assert not part_of(out).exists()
    assert server.ranges == [None]


def test_interrupted_transfer_keeps_the_part_and_the_next_call_resumes(server, tmp_path):
    out = tmp_path / "base.pt"
    server.drop_after = 3000
    with pytest.raises(DownloadError, match=r"closed after 3000 of 10240 bytes.*3000 bytes are kept in .*base.pt.part"):
        fetch(server.url, out, DIGEST, progress=False, retries=0)
    assert not out.exists()
    assert part_of(out).read_bytes() == PAYLOAD[:3000]
    fetch(server.url, out, DIGEST, progress=False)
    assert out.read_bytes() == PAYLOAD and not part_of(out).exists()
    assert server.ranges == [None, "bytes=3000-"]  # the second call asked only for the rest


def test_retries_resume_a_dropped_transfer_within_one_call(server, tmp_path):
    server.drop_after = 5000
    out = fetch(server.url, tmp_path / "base.pt", DIGEST, progress=False, retries=1)
    assert out.read_bytes() == PAYLOAD
    assert server.ranges == [None, "bytes=5000-"]


def test_a_server_that_ignores_range_restarts_the_file(server, tmp_path):
    out = tmp_path / "base.pt"
    part_of(out).write_bytes(b"stale bytes from another file")
    server.honour_range = False
    fetch(server.url, out, DIGEST, progress=False)
    assert out.read_bytes() == PAYLOAD


def test_a_complete_part_file_is_verified_without_downloading_again(server, tmp_path):
    out = tmp_path / "base.pt"
    part_of(out).write_bytes(PAYLOAD)
    fetch(server.url, out, DIGEST, progress=False)  # the server answers 416: nothing left to send
    assert out.read_bytes() == PAYLOAD
    assert server.ranges == [f"bytes={len(PAYLOAD)}-"]


def test_wrong_checksum_keeps_nothing_and_names_both_digests(server, tmp_path):
    out = tmp_path / "base.pt"
    wrong = hashlib.sha256(b"another file").hexdigest()
    with pytest.raises(ChecksumError) as err:
        fetch(server.url, out, wrong, progress=False)
    assert f"expected {wrong}, got {DIGEST}" in str(err.value) and "nothing kept" in str(err.value)
    assert not out.exists() and not part_of(out).exists()


def test_http_404_is_an_error_and_keeps_nothing(server, tmp_path):
    out = tmp_path / "base.pt"
    with pytest.raises(DownloadError, match=r"/missing.pt: HTTP 404 Not Found"):
        fetch(server.url.replace("model.pt", "missing.pt"), out, DIGEST, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_verified_file_is_not_downloaded_again(server, tmp_path):
    out = tmp_path / "base.pt"
    out.write_bytes(PAYLOAD)
    assert fetch(server.url, out, DIGEST, progress=False) == out
    assert server.ranges == []


def test_an_existing_file_with_another_digest_is_left_alone(server, tmp_path):
    out = tmp_path / "base.pt"
    out.write_bytes(b"my own file")
    with pytest.raises(FileExistsError, match=r"base.pt exists but its sha256 is [0-9a-f]{64}, not the expected"):
        fetch(server.url, out, DIGEST, progress=False)
    assert out.read_bytes() == b"my own file"


def test_a_malformed_digest_names_the_value():
    with pytest.raises(ValueError, match=r"--sha256 'abc123' is not a sha256 digest: it must be 64 hex characters"):
        fetch("http://127.0.0.1:9/x", "unused", "abc123")


def test_cli_fetch_shows_progress_and_verifies(server, tmp_path, capsys):
    out = tmp_path / "base.pt"
    assert main(["fetch", server.url, "--sha256", DIGEST.upper(), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert out.read_bytes() == PAYLOAD
    assert "100%" in captured.err  # the tqdm bar
    assert f"{out}" in captured.out and DIGEST in captured.out


def test_cli_fetch_checksum_mismatch_exits_2(server, tmp_path, capsys):
    wrong = "0" * 64
    assert main(["fetch", server.url, "--sha256", wrong, "--out", str(tmp_path / "base.pt"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"expected {wrong}, got {DIGEST}" in err
    assert list(tmp_path.iterdir()) == []
