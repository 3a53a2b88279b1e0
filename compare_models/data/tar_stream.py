"""Reading an archive's tar stream within fixed bounds, whatever the archive declares.

`read_archive` opens a gzip, bzip2, xz or plain tar file and makes one sequential pass over
its members: every member is checked from its header before its data is read (type, path,
declared size), the decompressed bytes, members and sizes are capped by the MAX_* bounds
below, and only the members a supported layout needs are kept (the pickled batches of the
official tarball, or the images of class-named folders). Decoding them is
`compare_models.data.decoding`'s job.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from compare_models.data.errors import DataError, mib, short
from compare_models.data.files import file_kind
from compare_models.data.pickled_batches import BATCH_FILES, MAX_BATCH_IMAGES
from compare_models.data.safety import shown
from compare_models.data.sources import MAX_ARCHIVE_BYTES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")

# ── bounds: what any archive may make the data stage spend ────────────────────
# The official tarball is 163 MiB with 8 members (~178 MiB unpacked); the JPEG image-folder
# archive is 19 MiB with 60,023 members of about 1 KiB each.
# (The compressed size, MAX_ARCHIVE_BYTES, is checked with the source: compare_models.data.sources;
# the images and opcodes of one pickled batch with the unpickler: compare_models.data.pickled_batches.)
MAX_MEMBERS = 100_000  # tar entries, folders included
MAX_TOTAL_BYTES = 512 << 20  # declared size of all members together
MAX_IMAGE_BYTES = 64 << 10  # one image file (a 32x32 image needs at most ~12 KiB)
MAX_BATCH_BYTES = MAX_BATCH_IMAGES * 3 * 32 * 32 + (16 << 20)  # one pickled batch file
MAX_OTHER_BYTES = 1 << 20  # any other member (a README, a licence), skipped but read past
MAX_HEADER_BYTES = 64 << 10  # a pax or GNU long-name header
MAX_NAME_CHARS = 1024  # a member's path
MAX_STREAM_BYTES = MAX_TOTAL_BYTES + (128 << 20)  # all decompressed bytes read (headers, padding)


_CIFAR_HINT = (
    "a CIFAR-10 archive unpacks to about 180 MiB. It is not a CIFAR-10 archive (or is a "
    "decompression bomb)"
)


class _BudgetedReader:
    """A read-only file over a (decompressing) stream that stops after `limit` bytes of work.

    Forward seeks count the bytes skipped (a gzip stream decompresses them); a backward seek
    counts the whole prefix (gzip rewinds and decompresses again). So no archive can make the
    reader decompress more than `limit` bytes, whatever its headers declare."""

    mode = "rb"

    def __init__(self, inner: Any, limit: int, label: str, hint: str = _CIFAR_HINT):
        self.inner, self.limit, self.label, self.hint = inner, limit, label, hint
        self.pos = self.work = 0
        self.name = label

    def _spend(self, n: int) -> None:
        self.work += n
        if self.work > self.limit:
            raise DataError(
                f"{self.label} decompresses to more than {mib(self.limit)}; {self.hint}"
            )

    def read(self, size: int | None = -1) -> bytes:
        room = self.limit - self.work + 1  # one byte past the budget proves an overrun
        size = room if size is None or size < 0 else min(size, room)
        data = self.inner.read(size)
        self.pos += len(data)
        self._spend(len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        target = offset if whence == 0 else self.pos + offset if whence == 1 else None
        if target is None or target < 0:
            raise OSError("unsupported seek in an archive stream")
        self._spend(target - self.pos if target >= self.pos else target)
        self.inner.seek(target)
        self.pos = target
        return target

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        self.inner.close()


class _SafeTarInfo(tarfile.TarInfo):
    """Refuses oversized pax / GNU long-name headers and sparse files while the header is parsed,
    before tarfile reads their data into memory."""

    def _proc_member(self, tarfile_):
        if (
            self.type
            in (
                tarfile.XHDTYPE,
                tarfile.XGLTYPE,
                tarfile.SOLARIS_XHDTYPE,
                tarfile.GNUTYPE_LONGNAME,
                tarfile.GNUTYPE_LONGLINK,
            )
            and self.size > MAX_HEADER_BYTES
        ):
            raise DataError(
                f"the archive has a {mib(self.size)} extended header (the limit is {mib(MAX_HEADER_BYTES)}); it is malformed "
                "or hostile: re-create it with a standard tar"
            )
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise self._sparse()
        return super()._proc_member(tarfile_)

    def _sparse(self) -> DataError:
        return DataError(
            f"archive member {shown(self.name)} is a sparse file; only regular files and folders are accepted: re-create the "
            "archive without --sparse"
        )

    def _proc_gnusparse_00(self, next, pax_headers, buf):  # noqa: A002
        raise self._sparse()

    def _proc_gnusparse_01(self, next, pax_headers):  # noqa: A002
        raise self._sparse()

    def _proc_gnusparse_10(self, next, pax_headers, tarfile_):  # noqa: A002
        raise self._sparse()


def _open_stream(path: Path) -> tuple[Any, Any]:
    """(decompressed byte stream, raw file) of an archive file (gzip, bzip2, xz or plain tar); close both."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block the open
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise DataError(
                f"{path.name} is a {file_kind(info.st_mode)}, not a regular file; pass the archive itself"
            )
        os.set_blocking(fd, True)
        raw = open(fd, "rb")  # noqa: SIM115  (closed by the caller through the stream)
    except BaseException:
        os.close(fd)
        raise
    try:
        if info.st_size > MAX_ARCHIVE_BYTES:
            raise DataError(
                f"{path.name} is {mib(info.st_size)}, more than the {mib(MAX_ARCHIVE_BYTES)} a CIFAR-10 archive can be"
            )
        magic = raw.read(6)
        raw.seek(0)
        if magic[:2] == b"\x1f\x8b":
            return gzip.GzipFile(fileobj=raw, mode="rb"), raw
        if magic[:3] == b"BZh":
            return bz2.BZ2File(raw), raw
        if magic == b"\xfd7zXZ\x00":
            return lzma.LZMAFile(raw), raw
        return raw, raw
    except BaseException:
        raw.close()
        raise


def _member_problem(member: tarfile.TarInfo) -> str | None:
    for test, kind in (
        (member.issym, "a symbolic link"),
        (member.islnk, "a hard link"),
        (member.ischr, "a character device"),
        (member.isblk, "a block device"),
        (member.isfifo, "a FIFO"),
        (member.issparse, "a sparse file"),
    ):
        if test():
            return kind
    return None if member.isreg() or member.isdir() else f"an entry of unknown type {member.type!r}"


def _split_and_class(parts: tuple[str, ...], name: str) -> tuple[str, str] | None:
    if len(parts) >= 3 and parts[-3] in ("train", "test") and name.lower().endswith(IMAGE_SUFFIXES):
        return parts[-3], parts[-2]
    return None


@dataclass
class Contents:
    """What `read_archive` keeps: batch name -> pickle bytes, and split -> {path: (class folder,
    image bytes)}."""

    batches: dict[str, bytes]
    images: dict[str, dict[str, tuple[str, bytes]]]


def _read_members(tar: tarfile.TarFile, label: str) -> Contents:
    """One sequential pass over the archive; every member is checked from its header before any of
    its data is read, and only the members a supported layout needs are kept."""
    contents = Contents({}, {"train": {}, "test": {}})
    count = total = 0
    while (member := tar.next()) is not None:
        del tar.members[:]  # keep no per-member state beyond what is used
        count += 1
        if count > MAX_MEMBERS:
            raise DataError(
                f"{label} has more than {MAX_MEMBERS} members; a CIFAR-10 archive has about 60,000 at most"
            )
        name = member.name
        parts = _checked(member, label, count, MAX_MEMBERS).parts
        if member.isdir():
            continue
        base = parts[-1] if parts else ""
        place = _split_and_class(parts, name)
        kind, cap = (
            ("batch", MAX_BATCH_BYTES)
            if base in BATCH_FILES
            else ("image", MAX_IMAGE_BYTES)
            if place
            else ("other", MAX_OTHER_BYTES)
        )
        if member.size > cap:
            raise DataError(
                f"archive member {shown(name)} declares {mib(member.size)}, more than the {mib(cap)} allowed for "
                f"{'a CIFAR-10 batch' if kind == 'batch' else 'an image' if kind == 'image' else 'any other file'}; "
                "the archive is not CIFAR-10 (or is hostile)"
            )
        total += member.size
        if total > MAX_TOTAL_BYTES:
            raise DataError(
                f"{label} declares more than {mib(MAX_TOTAL_BYTES)} of files; a CIFAR-10 archive unpacks to "
                "about 180 MiB"
            )
        if kind == "other":
            continue
        payload = tar.extractfile(member).read()  # type: ignore[union-attr]
        if len(payload) != member.size:
            raise DataError(
                f"archive member {shown(name)} is truncated; download the archive again"
            )
        if kind == "batch":
            if base in contents.batches:
                raise DataError(f"{label} holds {base} twice; it is malformed")
            contents.batches[base] = payload
        else:
            split, cls = place  # type: ignore[misc]
            contents.images[split][name] = (cls, payload)
    return contents


def read_archive(path: Path) -> Contents:
    """The members of archive `path` that a supported layout needs; time and memory are bounded
    by the MAX_* constants above, whatever the archive declares."""
    label = path.name
    try:
        stream, raw = _open_stream(path)
    except OSError as exc:
        raise DataError(
            f"{label} is not a readable archive ({exc.strerror or exc}); check the file or download it again"
        ) from None
    try:
        with raw, stream:
            try:
                tar = tarfile.TarFile(
                    fileobj=_BudgetedReader(stream, MAX_STREAM_BYTES, label),
                    mode="r",
                    tarinfo=_SafeTarInfo,
                )
            except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
                raise DataError(
                    f"{label} is not a readable .tar.gz archive ({short(exc)}); check the file or download it "
                    "again"
                ) from None
            return _read_members(tar, label)
    except DataError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
        raise DataError(f"{label} is a corrupt archive ({short(exc)}); download it again") from None


def _checked(member: tarfile.TarInfo, label: str, count: int, max_members: int) -> PurePosixPath:
    """The member's path, once its count, name, path and type are safe; else a `DataError`."""
    if count > max_members:
        raise DataError(
            f"{label} has more than {max_members:,} members; split it or raise the limit"
        )
    name = member.name
    if len(name) > MAX_NAME_CHARS or "\x00" in name:
        raise DataError(f"{label} has a member with a {len(name)}-character name; it is malformed")
    path = PurePosixPath(name)
    if name.startswith("/") or ".." in path.parts:
        raise DataError(
            f"archive member {shown(name)} has an unsafe path (absolute or with '..'); re-create "
            "the archive with relative paths"
        )
    if problem := _member_problem(member):
        raise DataError(
            f"archive member {shown(name)} is {problem}; only regular files and folders are "
            "accepted: re-create the archive without it"
        )
    return path


def iter_image_members(
    path: Path,
    *,
    max_members: int,
    max_stream_bytes: int,
    problem: Callable[[str, int], str | None],
) -> Iterator[tuple[str, bytes | str]]:
    """Every file member of an archive of images, in one sequential pass: (its path, its bytes),
    or (its path, why it is skipped) where `problem(path, declared size)` names a reason (read
    past, never kept). The archive is refused as a whole (a
    `DataError`) when a member is a link, a device or has an unsafe path, or when it has more
    than `max_members` members or decompresses to more than `max_stream_bytes`: time and memory
    are bounded whatever it declares."""
    label = path.name
    try:
        stream, raw = _open_stream(path)
    except OSError as exc:
        raise DataError(f"{label} is not a readable archive ({exc.strerror or exc})") from None
    hint = "split the archive, or unpack it into a folder and score the folder"
    with raw, stream:
        try:
            tar = tarfile.TarFile(
                fileobj=_BudgetedReader(stream, max_stream_bytes, label, hint),
                mode="r",
                tarinfo=_SafeTarInfo,
            )
            count = 0
            while (member := tar.next()) is not None:
                del tar.members[:]
                count += 1
                name = _checked(member, label, count, max_members).as_posix()
                if member.isdir():
                    continue
                if reason := problem(name, member.size):
                    yield name, reason
                else:
                    payload = tar.extractfile(member).read()  # type: ignore[union-attr]
                    if len(payload) != member.size:
                        raise DataError(f"archive member {shown(name)} is truncated")
                    yield name, payload
        except DataError:
            raise
        except (tarfile.TarError, EOFError, OSError, zlib.error, lzma.LZMAError) as exc:
            raise DataError(f"{label} is not a readable archive ({short(exc)})") from None
