"""Downloads are bounded (bytes, time) and guarded (redirects, connected peer), against a local
HTTP server on 127.0.0.1; and Pillow would have run PostScript had the formats not been limited."""

from __future__ import annotations

import http.server
import io
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from compare_models.data.files import (
    DownloadError,
    DownloadTooLarge,
    SafeRedirectHandler,
    download_url,
    opener,
)
from compare_models.data.safety import UnsafeURLError


class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple] = {}

    def do_GET(self):  # noqa: N802
        kind, *args = self.routes.get(self.path, ("status", 404))
        if kind == "status":
            self.send_response(args[0])
            self.end_headers()
        elif kind == "redirect":
            self.send_response(302)
            self.send_header("Location", args[0])
            self.end_headers()
        elif kind == "body":  # body, announced length (None: not announced)
            body, announced = args
            self.send_response(200)
            if announced is not None:
                self.send_header("Content-Length", str(announced))
            self.end_headers()
            try:
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif kind == "trickle":  # one byte every `delay` seconds, `count` times
            delay, count = args
            self.send_response(200)
            self.send_header("Content-Length", str(count))
            self.end_headers()
            try:
                for _ in range(count):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(delay)
            except (BrokenPipeError, ConnectionResetError):
                pass

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _route(path: str, *spec) -> str:
    _Handler.routes[path] = spec
    return path


def test_a_local_mirror_works_when_allowed(server, tmp_path):
    dest = download_url(
        server + _route("/ok.bin", "body", b"hello", 5), tmp_path / "ok.bin", allow_private=True
    )
    assert dest.read_bytes() == b"hello"


def test_loopback_is_refused_by_default_before_any_request(server, tmp_path):
    with pytest.raises(
        UnsafeURLError, match="127.0.0.1 is a loopback address.*COMPARE_MODELS_ALLOW_PRIVATE_URLS=1"
    ):
        download_url(server + _route("/ok2.bin", "body", b"hello", 5), tmp_path / "ok.bin")
    assert not list(tmp_path.iterdir())


def test_announced_size_over_the_limit_is_refused_without_reading(server, tmp_path):
    url = server + _route("/big-announced", "body", b"x" * 100, 10_000_000_000)
    with pytest.raises(
        DownloadTooLarge, match="announces 10000000000 bytes, more than the 1000-byte limit"
    ):
        download_url(url, tmp_path / "big", max_bytes=1000, allow_private=True)
    assert not list(tmp_path.iterdir()), "the partial file must be removed"


def test_unannounced_size_over_the_limit_is_cut_off(server, tmp_path):
    url = server + _route("/big-stream", "body", b"x" * 50_000, None)
    with pytest.raises(DownloadTooLarge, match="more than the 10000-byte limit was sent"):
        download_url(url, tmp_path / "big", max_bytes=10_000, allow_private=True)
    assert not list(tmp_path.iterdir())


def test_exactly_the_limit_is_accepted(server, tmp_path):
    url = server + _route("/exact", "body", b"x" * 10_000, None)
    assert (
        download_url(url, tmp_path / "exact", max_bytes=10_000, allow_private=True).stat().st_size
        == 10_000
    )


def test_a_trickling_server_hits_the_deadline(server, tmp_path):
    url = server + _route("/slow", "trickle", 0.2, 20)
    started = time.monotonic()
    with pytest.raises(DownloadError, match="took longer than 1 s"):
        download_url(url, tmp_path / "slow", deadline=1.0, timeout=5, allow_private=True)
    assert time.monotonic() - started < 4
    assert not list(tmp_path.iterdir())


def test_a_silent_server_hits_the_read_timeout(server, tmp_path):
    url = server + _route("/silent", "trickle", 1.5, 2)
    with pytest.raises(DownloadError, match="timed out"):
        download_url(url, tmp_path / "silent", timeout=0.5, allow_private=True)


def test_redirect_to_another_scheme_is_refused(server, tmp_path):
    with pytest.raises(
        DownloadError, match="Redirection to url 'file:///etc/passwd' is not allowed"
    ):  # urllib's own rule
        download_url(
            server + _route("/to-file", "redirect", "file:///etc/passwd"),
            tmp_path / "f",
            allow_private=True,
        )
    with pytest.raises(
        UnsafeURLError, match="refusing ftp URL ftp://127.0.0.1/x: only http:// and https://"
    ):  # ours
        download_url(
            server + _route("/to-ftp", "redirect", "ftp://127.0.0.1/x"),
            tmp_path / "f",
            allow_private=True,
        )
    assert not list(tmp_path.iterdir())


def test_redirect_with_credentials_is_refused(server, tmp_path):
    url = server + _route("/to-creds", "redirect", "http://user:hunter2@127.0.0.1:1/x")
    with pytest.raises(UnsafeURLError, match="given with credentials") as info:
        download_url(url, tmp_path / "f", allow_private=True)
    assert "hunter2" not in str(info.value)


def test_redirect_to_a_private_address_is_refused():
    handler = SafeRedirectHandler(allow_private=False)
    request = urllib.request.Request("https://example.com/cifar.tar.gz")
    with pytest.raises(UnsafeURLError, match="169.254.169.254 is a link-local address"):
        handler.redirect_request(
            request, io.BytesIO(), 302, "Found", {}, "http://169.254.169.254/latest/meta-data/"
        )


def test_the_connected_peer_is_checked_too(server):
    """A name that resolved to a public address at check time but connects to a private one (DNS
    rebinding) is refused at connect time: here the name check is skipped and the peer is 127.0.0.1."""
    with pytest.raises(UnsafeURLError, match="127.0.0.1 is a loopback address"):
        opener(allow_private=False).open(server + _route("/peer", "body", b"x", 1), timeout=5)


def test_http_errors_are_download_errors(server, tmp_path):
    with pytest.raises(DownloadError, match="Not Found"):
        download_url(server + "/missing", tmp_path / "m", allow_private=True)


def test_pillow_would_have_run_ghostscript_without_the_format_list():
    """Why the corpus' PostScript case matters: unrestricted, Pillow identifies it as EPS (whose load
    runs Ghostscript); restricted to the accepted formats it is not an image at all."""
    from PIL import Image, UnidentifiedImageError

    from compare_models.data.decoding import IMAGE_FORMATS
    from tests.hostile.corpus import _ps_as_jpeg

    with Image.open(io.BytesIO(_ps_as_jpeg())) as image:
        assert image.format == "EPS"
    with pytest.raises(UnidentifiedImageError):
        Image.open(io.BytesIO(_ps_as_jpeg()), formats=IMAGE_FORMATS)


def test_no_partial_file_is_left_when_the_server_is_down(tmp_path: Path):
    with pytest.raises(DownloadError):
        download_url("http://127.0.0.1:9/x", tmp_path / "x", timeout=2, allow_private=True)
    assert not list(tmp_path.iterdir())
