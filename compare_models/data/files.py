"""Local files: hashing, checking a local input and fetching a URL to disk, each in one place.

All are used by the data stage (archives) and by the weights resolver (ResNet50 files).
A download that fails leaves no partial file behind. Downloads are bounded: at most
`max_bytes` bytes, a per-read `timeout` and an overall `deadline`; and guarded: only
http(s), no credentials in the URL, and (unless `allow_private`) no loopback, link-local
or private address, checked on the URL, on every redirect and on the connected peer.
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import os
import stat
import time
import urllib.error
import urllib.request
from pathlib import Path

from compare_models.data.safety import (
    UnsafeURLError,
    address_problem,
    check_url,
    check_url_form,
    private_refusal,
    redact_url,
)

CHUNK = 4 << 20
MAX_DOWNLOAD_BYTES = 2 << 30  # callers pass their own, smaller bound
DOWNLOAD_DEADLINE_SECONDS = 3600.0


def file_digests(path: Path, *algorithms: str) -> dict[str, str]:
    """Hex digests of a file, read once: `file_digests(p, "sha256", "md5")`."""
    hashes = {name: hashlib.new(name) for name in algorithms or ("sha256",)}
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            for digest in hashes.values():
                digest.update(chunk)
    return {name: digest.hexdigest() for name, digest in hashes.items()}


def sha256_file(path: Path) -> str:
    return file_digests(path, "sha256")["sha256"]


# ── local input files ────────────────────────────────────────────────────────

_FILE_KINDS = {
    stat.S_IFDIR: "folder",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "FIFO (named pipe)",
    stat.S_IFSOCK: "socket",
}


def file_kind(mode: int) -> str:
    """What a file that is not a regular one is, in words ("folder", "FIFO (named pipe)", ...)."""
    return _FILE_KINDS.get(stat.S_IFMT(mode), "special file")


class NotARegularFile(ValueError):
    """A local input is a folder, device, FIFO or socket; `kind` says which."""

    def __init__(self, path: Path, kind: str):
        super().__init__(f"{path} is a {kind}, not a regular file")
        self.kind = kind


class FileTooLarge(ValueError):
    """A local input is larger than the caller's bound; `size` is its size in bytes."""

    def __init__(self, path: Path, size: int, limit: int):
        super().__init__(f"{path} is {size} bytes, more than the {limit}-byte limit")
        self.size, self.limit = size, limit


def check_regular_file(path: Path, max_bytes: int) -> None:
    """A local input must be a regular file of at most `max_bytes` (never a device, FIFO or
    folder, which could block or never end). Raises `OSError` when it cannot be read (its
    `strerror` says why), `NotARegularFile` or `FileTooLarge`."""
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        raise NotARegularFile(path, file_kind(info.st_mode))
    if info.st_size > max_bytes:
        raise FileTooLarge(path, info.st_size, max_bytes)


class DownloadError(OSError):
    """A URL could not be fetched; `reason` is what the network layer said."""

    def __init__(self, url: str, reason: object):
        super().__init__(f"could not download {redact_url(url)} ({reason})")
        self.url, self.reason = redact_url(url), reason


class DownloadTooLarge(DownloadError):
    """The server sent (or announced) more than the caller's byte limit."""


# ── guarded connections ──────────────────────────────────────────────────────


def _check_peer(conn: http.client.HTTPConnection, url: str) -> None:
    if conn.sock is None or getattr(conn, "_tunnel_host", None):
        return  # through a proxy: the target was checked by name before connecting
    address = conn.sock.getpeername()[0]
    if problem := address_problem(address):
        conn.close()
        raise private_refusal(url, conn.host, address, problem)


class _PeerGuard:
    """Mixed into an http.client connection: once connected (and, for HTTPS, after the TLS
    handshake), the peer's address is checked against the address policy."""

    def __init__(self, *args, guard_url: str, **kwargs):
        super().__init__(*args, **kwargs)
        self._guard_url = guard_url

    def connect(self) -> None:
        super().connect()
        _check_peer(self, self._guard_url)


class _GuardedHTTPConnection(_PeerGuard, http.client.HTTPConnection):
    pass


class _GuardedHTTPSConnection(_PeerGuard, http.client.HTTPSConnection):
    pass


class _GuardedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        if req.has_proxy():
            return super().http_open(req)
        return self.do_open(functools.partial(_GuardedHTTPConnection, guard_url=req.full_url), req)


class _GuardedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        if req.has_proxy():
            return super().https_open(req)
        return self.do_open(
            functools.partial(_GuardedHTTPSConnection, guard_url=req.full_url),
            req,
            context=self._context,
        )


class SafeRedirectHandler(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to a URL that `check_url` accepts (http(s), no credentials, public
    unless `allow_private`)."""

    max_redirections = 5

    def __init__(self, allow_private: bool):
        super().__init__()
        self.allow_private = allow_private

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        check_url(newurl, allow_private=self.allow_private)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def opener(*, allow_private: bool) -> urllib.request.OpenerDirector:
    """A urllib opener that applies the address policy to redirects and connected peers."""
    handlers: list = [SafeRedirectHandler(allow_private)]
    if not allow_private:
        handlers += [_GuardedHTTPHandler(), _GuardedHTTPSHandler()]
    return urllib.request.build_opener(*handlers)


# ── download ─────────────────────────────────────────────────────────────────


def download_url(
    url: str,
    dest: Path,
    *,
    timeout: float = 30,
    max_bytes: int = MAX_DOWNLOAD_BYTES,
    deadline: float = DOWNLOAD_DEADLINE_SECONDS,
    allow_private: bool = False,
) -> Path:
    """Stream `url` into `dest` (through a `.part` file, removed on any failure).

    Raises `UnsafeURLError` for a URL the policy refuses, `DownloadTooLarge` beyond `max_bytes`,
    and `DownloadError` for any other failure (unreachable, HTTP error, `timeout` seconds without
    data, `deadline` seconds in all).
    """
    check_url_form(url)
    try:
        check_url(url, allow_private=allow_private)
    except OSError as exc:  # the host does not resolve
        raise DownloadError(url, getattr(exc, "strerror", None) or exc) from None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    started = time.monotonic()
    try:
        with (
            opener(allow_private=allow_private).open(url, timeout=timeout) as response,
            part.open("wb") as out,
        ):
            announced = response.headers.get("Content-Length")
            if announced and announced.isdigit() and int(announced) > max_bytes:
                raise DownloadTooLarge(
                    url,
                    f"the server announces {int(announced)} bytes, more than the {max_bytes}-byte limit",
                )
            received = 0
            while chunk := response.read1(
                min(1 << 20, max_bytes + 1 - received)
            ):  # returns what has arrived
                received += len(chunk)
                if received > max_bytes:
                    raise DownloadTooLarge(url, f"more than the {max_bytes}-byte limit was sent")
                if time.monotonic() - started > deadline:
                    raise DownloadError(url, f"the download took longer than {deadline:.0f} s")
                out.write(chunk)
        part.replace(dest)
    except (UnsafeURLError, DownloadError):
        part.unlink(missing_ok=True)
        raise
    except (urllib.error.URLError, TimeoutError, OSError, http.client.HTTPException) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(url, getattr(exc, "reason", exc)) from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return dest
