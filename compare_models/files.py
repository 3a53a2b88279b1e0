"""Local files: hashing and fetching a URL to disk, each in one place.

Both are used by the data stage (archives) and by the weights resolver (ResNet50 files).
A download that fails leaves no partial file behind.
"""

from __future__ import annotations

import hashlib
import shutil
import urllib.error
import urllib.request
from pathlib import Path

CHUNK = 4 << 20


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


class DownloadError(OSError):
    """A URL could not be fetched; `reason` is what the network layer said."""

    def __init__(self, url: str, reason: object):
        super().__init__(f"could not download {url} ({reason})")
        self.url, self.reason = url, reason


def download_url(url: str, dest: Path, *, timeout: float = 30) -> Path:
    """Stream `url` into `dest` (through a `.part` file, removed on any failure)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, part.open("wb") as out:
            shutil.copyfileobj(response, out, 1 << 20)
        part.replace(dest)
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(url, getattr(exc, "reason", exc)) from None
    return dest
