"""A folder of labelled images as a data source: a local directory or an ``s3://bucket/prefix/``.

Either layout is read, decided from the folder's own paths:

* ``<root>/<class>/<image>``: labels from the folder names, splits by hash;
* ``<root>/train/<class>/<image>`` and ``<root>/test/<class>/<image>``: a fixed test set.

`list_folder` lists the files (one S3 listing, or one walk of the directory) with what tells a
file unchanged without reading it (an S3 ETag, or size and modification time); `place` says
where a file belongs or why it is skipped; `FolderReader.read` fetches one file's bytes within
a size cap. Nothing here decodes images (`compare_models.data.images`).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compare_models.data.errors import DataError, mib
from compare_models.data.safety import shown
from compare_models.data.tar_stream import IMAGE_SUFFIXES

if TYPE_CHECKING:
    from compare_models.storage.store import ArtifactStore

#: A class name: a folder name that is safe in keys, reports and plots.
CLASS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.+-]{0,63}")
FIXED_SPLITS = ("train", "test")
MAX_KEY_CHARS = 1024


@dataclass(frozen=True)
class FolderEntry:
    """One file of the folder: its path below the root, size and change stamp."""

    key: str
    size: int
    stamp: str  # an S3 ETag, or "<size>-<mtime_ns>" of a local file: equal means unchanged


@dataclass(frozen=True)
class Place:
    """Where a file belongs: its class and, in the fixed layout, its folder's split."""

    class_name: str
    folder_split: str | None  # "train" | "test" in the train/test layout, else None


@dataclass(frozen=True)
class FolderSource:
    """A folder source: ``kind`` "s3" (bucket + prefix) or "local" (a directory)."""

    kind: str
    location: str  # s3://bucket/prefix/ or an absolute directory path

    @property
    def bucket_and_prefix(self) -> tuple[str, str]:
        bucket, _, prefix = self.location.removeprefix("s3://").partition("/")
        return bucket, prefix


def folder_source(data: str) -> FolderSource | None:
    """The folder `data` names (an s3:// URI ending in '/', or an existing directory), or None."""
    if data.startswith("s3://"):
        if not data.endswith("/"):
            return None
        bucket, _, prefix = data.removeprefix("s3://").partition("/")
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
            raise DataError(f"{shown(data)}: {shown(bucket)} is not an S3 bucket name")
        if "//" in prefix or any(part in (".", "..") for part in prefix.split("/")):
            raise DataError(f"{shown(data)}: the prefix must be a plain path (no '//', '.', '..')")
        return FolderSource("s3", data)
    path = Path(data).expanduser()
    if path.is_dir():
        return FolderSource("local", str(path.resolve()))
    return None


def is_folder_source(data: str) -> bool:
    """Whether `data` names a folder of images or a stored version (not an archive)."""
    data = data.strip()
    return data.startswith("version:") or folder_source(data) is not None


def _local_entries(root: Path, max_files: int) -> Iterator[FolderEntry]:
    """Every regular file below `root`, never following a link out of it."""
    stack = [(root, "")]  # a folder and its key prefix (its path below root, '/'-separated)
    while stack:
        folder, prefix = stack.pop()
        with os.scandir(folder) as it:
            for item in it:
                info = item.stat(follow_symlinks=False)
                if stat.S_ISDIR(info.st_mode):
                    stack.append((Path(item.path), f"{prefix}{item.name}/"))
                    continue
                # a link, FIFO or device is listed (and then skipped), never opened
                kind = "" if stat.S_ISREG(info.st_mode) else "special:"
                yield FolderEntry(
                    prefix + item.name, info.st_size, f"{kind}{info.st_size}-{info.st_mtime_ns}"
                )


def list_folder(source: FolderSource, store: ArtifactStore, max_files: int) -> list[FolderEntry]:
    """Every file of the folder, sorted by key; refused beyond `max_files` before any is read."""
    if source.kind == "s3":
        bucket, prefix = source.bucket_and_prefix
        listing = (
            FolderEntry(key.removeprefix(prefix), size, etag)
            for key, size, etag in store.in_bucket(bucket).list_entries(prefix)
            if not key.endswith("/")
        )
    else:
        listing = _local_entries(Path(source.location), max_files)
    entries = []
    for entry in listing:
        entries.append(entry)
        if len(entries) > max_files:
            raise DataError(
                f"{source.location} holds more than {max_files:,} files (folder.max_files); "
                "point --data at a smaller folder or raise the limit"
            )
    return sorted(entries, key=lambda e: e.key)


def folder_layout(entries: list[FolderEntry]) -> str:
    """'train-test-folders' when the top level is train/ and test/ folders, else 'class-folders'."""
    tops = {e.key.split("/", 1)[0] for e in entries if "/" in e.key}
    return (
        "train-test-folders"
        if tops and tops <= set(FIXED_SPLITS) and "test" in tops
        else "class-folders"
    )


def place(entry: FolderEntry, layout: str, max_image_bytes: int) -> Place | str:
    """Where `entry` belongs, or why it is skipped (a sentence)."""
    parts = entry.key.split("/")
    if len(entry.key) > MAX_KEY_CHARS:
        return f"its path is longer than {MAX_KEY_CHARS} characters"
    depth = 3 if layout == "train-test-folders" else 2
    if len(parts) != depth:
        return (
            "it is not in a class folder (expected train|test/<class>/<image>)"
            if depth == 3
            else "it is not in a class folder (expected <class>/<image>)"
        )
    class_name = parts[-2]
    if not CLASS_NAME.fullmatch(class_name):
        return f"its class folder {shown(class_name, 70)} is not a plain name (letters, digits, ' _.+-')"
    return file_problem(entry, max_image_bytes) or Place(
        class_name, parts[0] if depth == 3 else None
    )


def file_problem(entry: FolderEntry, max_image_bytes: int) -> str | None:
    """Why the file `entry` cannot be an image to read (a sentence), or None."""
    if len(entry.key) > MAX_KEY_CHARS:
        return f"its path is longer than {MAX_KEY_CHARS} characters"
    if not entry.key.lower().endswith(IMAGE_SUFFIXES):
        return f"it is not an image file ({', '.join(IMAGE_SUFFIXES)})"
    if entry.stamp.startswith("special:"):
        return "it is not a regular file (a link, FIFO or device)"
    if entry.size > max_image_bytes:
        return f"it is {mib(entry.size)}, more than folder.max_image_bytes ({mib(max_image_bytes)})"
    if entry.size == 0:
        return "it is empty"
    return None


#: What a local file's reads after the first ask for (the first asks for its size, plus one).
READ_CHUNK = 1 << 16


class FolderReader:
    """Reads the folder's files, each within `max_bytes` (refused, never truncated)."""

    def __init__(self, source: FolderSource, store: ArtifactStore, max_bytes: int):
        self.source, self.max_bytes = source, max_bytes
        if source.kind == "s3":
            bucket, self.prefix = source.bucket_and_prefix
            self.bucket = store.in_bucket(bucket)

    def read(self, key: str) -> bytes:
        if self.source.kind == "s3":
            return self.bucket.get_bytes(self.prefix + key, max_bytes=self.max_bytes)
        # os-level calls, the first sized by fstat, not a buffered file object asked for
        # max_bytes + 1 (which allocates that much for every file): small files cost less so
        flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        fd = os.open(os.path.join(self.source.location, key), flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise DataError(f"{key} is not a regular file")
            parts, size = [], 0
            want = min(info.st_size, self.max_bytes) + 1
            # until the end of the file (an empty read: a short read may come before it, on a
            # network file system or after a signal), or one byte beyond the limit
            while size <= self.max_bytes and (part := os.read(fd, want)):
                parts.append(part)
                size += len(part)
                want = min(self.max_bytes + 1 - size, READ_CHUNK)
        finally:
            os.close(fd)
        if size > self.max_bytes:
            raise DataError(f"{key} grew beyond {mib(self.max_bytes)} while it was read")
        return b"".join(parts)
