"""The data stage's source: which archive `RunParams.data` names, fetched, checked and stored.

`resolve_source` reads the ``--data`` text (``cifar10``, an ``https://`` URL, a local path,
an ``s3://`` URI or ``synthetic[:N]``) and refuses what can never be an archive before anything
is downloaded; `fetch_archive` brings the archive to the local cache and verifies its size and
checksums (the official MD5, a given SHA-256 or one from a ``SHA256SUMS`` file beside a local
archive); `store_archive` stores it in S3, content-addressed, once it has decoded as CIFAR-10,
and indexes where a URL or s3:// source went so that a later run needs no internet.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from compare_models.config import CIFAR10_MD5, CIFAR10_URL, NUM_CLASSES
from compare_models.data.errors import DataError, inside, mib
from compare_models.data.files import (
    DownloadError,
    DownloadTooLarge,
    FileTooLarge,
    NotARegularFile,
    check_regular_file,
    download_url,
    file_digests,
)
from compare_models.data.safety import (
    UnsafeURLError,
    check_url_form,
    is_sha256,
    plain_name,
    redact_url,
    safe_filename,
    shown,
)
from compare_models.storage import layout

if TYPE_CHECKING:
    from compare_models.storage.store import ArtifactStore

MAX_ARCHIVE_BYTES = 1 << 30  # a source archive, compressed (the official one is 163 MiB)
MAX_SYNTHETIC = (
    100_000  # synthetic:N training images (N x 24 KiB of float64 noise while generating)
)


@dataclass(frozen=True)
class Source:
    """Where the data comes from, as `resolve_source` read it."""

    kind: str  # "url" | "path" | "s3" | "synthetic"
    location: str
    synthetic_size: int = 0

    @property
    def is_synthetic(self) -> bool:
        return self.kind == "synthetic"


def _check_local_archive(path: Path, given: str) -> None:
    """A local source must be a regular file of sane size (never a device, FIFO or folder)."""
    try:
        check_regular_file(path, MAX_ARCHIVE_BYTES)
    except NotARegularFile as exc:
        raise DataError(
            f"data source {given!r} is a {exc.kind}, not a regular file; pass the CIFAR-10 .tar.gz archive itself"
        ) from None
    except FileTooLarge as exc:
        raise DataError(
            f"data source {given!r} is {mib(exc.size)}, more than the {mib(MAX_ARCHIVE_BYTES)} a CIFAR-10 archive can be "
            "(the official one is 163 MiB); pass the CIFAR-10 archive"
        ) from None
    except OSError as exc:
        raise DataError(
            f"cannot read the data source {given!r} ({exc.strerror}); check the path"
        ) from None


def resolve_source(data: str) -> Source:
    """The source `data` (``--data``) names; refuses one that can never be a CIFAR-10 archive."""
    data = data.strip()
    if data in ("cifar10", "official"):
        return Source("url", CIFAR10_URL)
    if data == "synthetic" or data.startswith("synthetic:"):
        size = data.partition(":")[2] or "2000"
        if not size.isdigit() or not NUM_CLASSES * 2 <= int(size) <= MAX_SYNTHETIC:
            raise DataError(
                f"synthetic size {shown(size, 30)} must be an integer from {NUM_CLASSES * 2} to {MAX_SYNTHETIC} "
                "(e.g. synthetic:2000)"
            )
        return Source("synthetic", "synthetic", int(size))
    if data.startswith(("http://", "https://")):
        try:
            check_url_form(data)
        except UnsafeURLError as exc:
            raise DataError(str(exc)) from None
        return Source("url", data)
    if data.startswith("s3://"):
        from compare_models.storage.store import parse_s3_uri

        parse_s3_uri(data)
        return Source("s3", data)
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(
            f"data source {data!r} is neither 'cifar10', 'synthetic[:N]', a URL, an s3:// URI nor an existing file"
        )
    _check_local_archive(path, data)
    return Source("path", str(path.resolve()))


def _download(url: str, dest: Path, *, allow_private: bool = False) -> None:
    try:
        download_url(url, dest, max_bytes=MAX_ARCHIVE_BYTES, allow_private=allow_private)
    except UnsafeURLError as exc:
        raise DataError(str(exc)) from None
    except DownloadTooLarge as exc:
        raise DataError(
            f"refusing the download from {redact_url(url)}: {exc.reason}; a CIFAR-10 archive is at most "
            f"{mib(MAX_ARCHIVE_BYTES)} (the official one is 163 MiB). Check the URL."
        ) from None
    except DownloadError as exc:
        raise DataError(
            f"could not download {redact_url(url)} ({exc.reason}). This machine may have no internet "
            "access: download the archive elsewhere and pass it with --data <path or s3:// URI> "
            "(make demo DATA=<path or s3:// URI>)."
        ) from None


def _expected_sha256_beside(path: Path) -> str | None:
    """A SHA256SUMS file next to a local archive, if it lists it."""
    sums = path.parent / "SHA256SUMS"
    if not sums.is_file() or sums.stat().st_size > 1 << 20:
        return None
    for line in sums.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == path.name:
            return parts[0].lower()
    return None


def verify_checksums(
    path: Path, sha256: str, md5: str, *, expected_sha256: str | None, expected_md5: str | None
) -> None:
    for algo, expected, actual in (
        ("SHA-256", expected_sha256, sha256),
        ("MD5", expected_md5, md5),
    ):
        if expected and expected.lower() != actual:
            raise DataError(
                f"checksum mismatch for {path.name}: expected {algo} {expected}, got {actual}. The file is corrupt or "
                "not the archive you meant; download it again (nothing was cached)."
            )


@dataclass(frozen=True)
class FetchedArchive:
    path: Path  # local copy
    name: str  # dataset name used in the S3 layout
    sha256: str
    raw_key: str
    source: Source | None = None


def _index_entry(entry: Any, index_uri: str) -> tuple[str, str, str]:
    """(sha256, filename, raw_key) of a source index read back from S3, validated: it is untrusted."""
    if isinstance(entry, dict):
        sha, filename, raw_key = entry.get("sha256"), entry.get("filename"), entry.get("raw_key")
        if (
            is_sha256(sha)
            and plain_name(filename)
            and raw_key == layout.raw_archive_key(_dataset_name(filename), sha, filename)
        ):
            return sha, filename, raw_key
    raise DataError(
        f"the source index {index_uri} is malformed (its sha256, filename or raw_key is not what this project writes); "
        "delete it and run again to download the source afresh"
    )


def fetch_archive(
    source: Source,
    store: ArtifactStore,
    cache_dir: Path,
    *,
    expected_sha256: str | None,
    allow_private_urls: bool = False,
) -> FetchedArchive:
    """Get the archive locally and verify its size and checksums. Nothing is stored in S3 here:
    `store_archive` does that once the archive has decoded as CIFAR-10. A URL source on a
    loopback, link-local or private address is refused unless `allow_private_urls`
    (`Settings.allow_private_urls`, COMPARE_MODELS_ALLOW_PRIVATE_URLS)."""
    from compare_models.storage.errors import StoreError
    from compare_models.storage.store import parse_s3_uri

    cache_dir.mkdir(parents=True, exist_ok=True)
    index_key = layout.source_index_key(source.location)
    expected_md5 = CIFAR10_MD5 if source.location == CIFAR10_URL else None

    if source.kind == "url" and store.exists(index_key):
        sha, filename, raw_key = _index_entry(
            store.get_json(index_key), store.uri(index_key)
        )  # cached earlier: no internet
        expected_sha256 = expected_sha256 or sha
        local = inside(cache_dir, "raw", sha, filename, what="cached archive path")
        if not local.exists():
            store.download(raw_key, local)
    elif source.kind == "url":
        url_name = PurePosixPath(urllib.parse.urlsplit(source.location).path).name
        local = inside(
            cache_dir, "downloads", safe_filename(url_name, "archive.tar.gz"), what="download path"
        )
        local.parent.mkdir(parents=True, exist_ok=True)
        _download(source.location, local, allow_private=allow_private_urls)
    elif source.kind == "s3":
        _, key = parse_s3_uri(source.location)
        local = inside(
            cache_dir,
            "downloads",
            safe_filename(PurePosixPath(key).name, "archive.tar.gz"),
            what="download path",
        )
        try:
            store.fetch_uri(source.location, local)
        except StoreError as exc:
            raise DataError(str(exc)) from None
    else:
        local = Path(source.location)
        expected_sha256 = expected_sha256 or _expected_sha256_beside(local)
    _check_local_archive(local, local.name)

    digests = file_digests(local, "sha256", "md5")
    sha256, md5 = digests["sha256"], digests["md5"]
    verify_checksums(local, sha256, md5, expected_sha256=expected_sha256, expected_md5=expected_md5)
    filename = safe_filename(local.name, "archive.tar.gz")
    name = _dataset_name(filename)
    return FetchedArchive(
        local, name, sha256, layout.raw_archive_key(name, sha256, filename), source
    )


def store_archive(raw: FetchedArchive, store: ArtifactStore) -> None:
    """Store the (decoded, hence verified) raw archive once, and index where a URL / s3:// source went."""
    if not store.exists(raw.raw_key):
        store.upload(
            raw.path, raw.raw_key, overwrite=True
        )  # content-addressed: same bytes, same key
    source = raw.source
    if source is not None and source.kind in ("url", "s3"):
        index_key = layout.source_index_key(source.location)
        if not store.exists(index_key):
            entry = {
                "source": redact_url(source.location) if source.kind == "url" else source.location,
                "sha256": raw.sha256,
                "filename": PurePosixPath(raw.raw_key).name,
                "raw_key": raw.raw_key,
            }
            store.put_json(entry, index_key, overwrite=True)


def name_characters(text: str) -> str:
    """`text` in the characters the S3 layout allows in a dataset name: lowercase ASCII letters
    and digits, '-', '_' and '.'; any other character becomes '-'."""
    return "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "-" for c in text.lower())


def _dataset_name(filename: str) -> str:
    stem = filename
    for suffix in (".tar.gz", ".tgz", ".tar"):
        stem = stem.removesuffix(suffix)
    return name_characters(stem).lstrip("-_.")[:100] or "dataset"
