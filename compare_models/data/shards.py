"""A prepared split stored as shards: ArrayRecord files of at most `SHARD_BYTES`, read by index.

Why ArrayRecord. A training's batches are a pure function of (seed, epoch, batch)
(`compare_models.training.batches.ShuffledBatches`), so that a training resumed from a
checkpoint sees the same batches as one that was not stopped, under either Keras backend. That
needs reading any image by its index: ArrayRecord (Google's format, the one Grain reads as
`grain.python.ArrayRecordDataSource`) is indexed for random access, where TFRecord and
WebDataset's tar files are read front to back. It is read here with `array_record`'s own data
source (what Grain re-exports), in plain Python and NumPy, so it runs under JAX and TensorFlow
alike, with no TensorFlow in the reading. Each record is one image's pixels (uint8,
`side x side x 3`, row-major) in its own chunk (`group_size:1`), so reading one image reads
one chunk; the labels are one `.npy` beside the shards, in the same order.

Stored once, by content: each shard and the labels file are named by their SHA-256, and the
split's manifest (`SplitShards`, in `prepared.json`, which is written last) lists each with
its SHA-256, image count and bytes. A reader checks each file's SHA-256 as it copies it to
the local cache; a shard that does not match (truncated, altered) is refused by name, never
read, and noted in `damaged.json`, so that the next run's data stage rebuilds it from the
source images (`shard_problems`).

The local cache (`Settings.shard_cache_gib`) keeps the shards of recent splits on the worker's
disk; the least recently used go first, but never one that a reader on the host has pinned
(`PinnedShards`: a shared `flock` on each shard it reads). A split larger than the whole cache
is read a window of shards at a time (`compare_models.data.shard_windows`).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import logging
import math
import os
import resource
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from compare_models.config import SHARD_BYTES, ImageSide, image_shape
from compare_models.data.errors import DataError, inside
from compare_models.data.files import sha256_file
from compare_models.storage import layout

if TYPE_CHECKING:
    from compare_models.storage.store import ArtifactStore

log = logging.getLogger(__name__)

#: Shards downloaded at once into the local cache.
DOWNLOADS = 4
#: One record per chunk: an image is read without reading its neighbours.
RECORD_OPTIONS = "group_size:1"
SHA256 = r"^[0-9a-f]{64}$"
SUFFIX = ".array_record"


class ShardInfo(BaseModel):
    """One shard of a split: its key (named by its SHA-256), how many images, how many bytes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(max_length=1024)
    sha256: str = Field(pattern=SHA256)
    images: int = Field(ge=1)
    bytes: int = Field(ge=1)


class SplitShards(BaseModel):
    """A split's manifest: its shards in order, its labels file, its image size."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    images: int = Field(ge=0)
    image_size: ImageSide
    labels_key: str = Field(max_length=1024)
    labels_sha256: str = Field(pattern=SHA256)
    shards: list[ShardInfo] = Field(max_length=100_000)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.shards)

    @property
    def shape(self) -> tuple[int, int, int]:
        return image_shape(self.image_size)

    @property
    def pixel_bytes(self) -> int:
        """The bytes of its pixels in memory (uint8)."""
        return self.images * int(np.prod(image_shape(self.image_size)))

    def problem(self, prefix: str, split: str) -> str | None:
        """Why this manifest, read back from the bucket (untrusted), is not one this project
        wrote for `split` under `prefix`; None when it is."""
        for shard in self.shards:
            if shard.key != layout.shard_key(prefix, split, shard.sha256):
                return f"its {split} shard key {shard.key[:200]!r} is not where its SHA-256 puts it"
        if self.labels_key != layout.labels_key(prefix, split, self.labels_sha256):
            return (
                f"its {split} labels key {self.labels_key[:200]!r} is not where its SHA-256 puts it"
            )
        if sum(s.images for s in self.shards) != self.images:
            return f"its {split} shards hold {sum(s.images for s in self.shards)} images, not {self.images}"
        return None


# ── writing ──────────────────────────────────────────────────────────────────


def shard_count(x: np.ndarray, shard_bytes: int = SHARD_BYTES) -> int:
    """How many shards hold `x` with none over `shard_bytes` of pixels (at least one)."""
    return max(1, math.ceil(x.nbytes / shard_bytes))


def write_split(
    x: np.ndarray,
    y: np.ndarray,
    prefix: str,
    split: str,
    store: ArtifactStore,
    work_dir: Path,
    *,
    shard_bytes: int = SHARD_BYTES,
    rewrite: frozenset[str] = frozenset(),
) -> SplitShards:
    """Writes a split (uint8 images, int labels) as shards under `prefix`: each written to a
    local file, hashed and stored under its SHA-256, unless that object is there already
    (content-addressed), or its key is in `rewrite` (found damaged: restored)."""
    from array_record.python.array_record_module import ArrayRecordWriter

    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1] != x.shape[2] or len(x) != len(y):
        raise ValueError(f"{split}: {x.shape} {x.dtype} images and {len(y)} labels")
    count = shard_count(x, shard_bytes)
    per_shard = math.ceil(len(x) / count) if len(x) else 0
    shards = []
    work_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        for start in range(0, len(x), max(1, per_shard)):
            part = x[start : start + per_shard]
            path = Path(tmp) / f"shard{SUFFIX}"
            writer = ArrayRecordWriter(str(path), RECORD_OPTIONS)
            for image in part:
                writer.write(image.tobytes())
            writer.close()
            sha = sha256_file(path)
            key = layout.shard_key(prefix, split, sha)
            if key in rewrite or not store.exists(key):
                store.upload(path, key, overwrite=True)  # content-addressed: these very bytes
            shards.append(
                ShardInfo(key=key, sha256=sha, images=len(part), bytes=path.stat().st_size)
            )
            path.unlink()
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(y, dtype=np.int64), allow_pickle=False)
    labels = buffer.getvalue()
    labels_sha = _sha256(labels)
    labels_key = layout.labels_key(prefix, split, labels_sha)
    if labels_key in rewrite or not store.exists(labels_key):
        store.put_bytes(labels, labels_key, overwrite=True)
    return SplitShards(
        images=len(x),
        image_size=x.shape[1],
        labels_key=labels_key,
        labels_sha256=labels_sha,
        shards=shards,
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ── checking what is stored ──────────────────────────────────────────────────


def shard_problems(store: ArtifactStore, prefix: str, manifests: dict[str, SplitShards]) -> dict:
    """The stored files of a splits prefix that are not what its manifests say, by key: missing,
    of another size (one listing), or noted damaged by a reader (`damaged.json`)."""
    listed = dict(store.list_objects(prefix + "shards/"))
    problems: dict[str, str] = {}
    for manifest in manifests.values():
        for shard in manifest.shards:
            size = listed.get(shard.key)
            if size is None:
                problems[shard.key] = "missing"
            elif size != shard.bytes:
                problems[shard.key] = f"{size:,} bytes, not {shard.bytes:,}"
        if manifest.labels_key not in listed:
            problems[manifest.labels_key] = "missing"
    noted = _noted(store, prefix)
    if noted is None:
        problems[layout.damaged_key(prefix)] = "not valid JSON"
    for key in noted or []:
        if key.startswith(prefix):
            problems.setdefault(key, "found damaged by a reader")
    return problems


def _noted(store: ArtifactStore, prefix: str) -> list[str] | None:
    """The keys the prefix's `damaged.json` names (none when there is none; None when it is not
    the JSON a reader writes)."""
    noted = store.get_bytes_if_exists(layout.damaged_key(prefix), max_bytes=1 << 20)
    try:
        keys = json.loads(noted or b"{}").get("keys", [])
        return [k for k in keys if isinstance(k, str)] if isinstance(keys, list) else None
    except (ValueError, AttributeError):
        return None


def _note_damaged(store: ArtifactStore, prefix: str, key: str) -> None:
    """Adds `key` to the prefix's `damaged.json` (what the next run's data stage rebuilds)."""
    keys = _noted(store, prefix) or []
    store.put_json(
        {"keys": sorted({*keys, key}), "noted_at": datetime.now(UTC).isoformat()},
        layout.damaged_key(prefix),
        overwrite=True,
    )


# ── the local cache ──────────────────────────────────────────────────────────

#: The cache's lock file (under its datasets folder): one process at a time checks, evicts
#: and fetches; readers pin their shards in between.
LOCK_FILE = ".lock"


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """The cache held by this caller alone, across the processes and threads of a host
    (`flock` on the cache's lock file, an open file of the caller's own)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a+b") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class PinnedShards:
    """A split's shards in the local cache, each held with a shared `flock` while a reader
    uses them, so that no training on the host evicts a shard another is reading
    (`_make_room` removes only shards it can lock alone). `close()` lets them go; so does
    the garbage collector, which closes the files."""

    def __init__(self, paths: list[Path]):
        self.paths = paths
        self._files = []
        _allow_open_files(2 * len(paths))  # its pin and a reader's file, for each shard
        try:
            for path in paths:
                pin = open(path, "rb")  # noqa: SIM115 (held open: the pin is the open file)
                self._files.append(pin)
                fcntl.flock(pin, fcntl.LOCK_SH)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        for pin in self._files:
            pin.close()
        self._files = []


_warned_over: set[Path] = set()


def _allow_open_files(more: int) -> None:
    """Raises this process's soft limit on open files (towards the hard one) where `more`
    files would pass it: a split of many shards pins each."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        open_now = len(os.listdir("/proc/self/fd"))
    except OSError:
        open_now = 256
    wanted = open_now + more + 64
    if soft != resource.RLIM_INFINITY and wanted > soft:
        ceiling = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
        resource.setrlimit(resource.RLIMIT_NOFILE, (ceiling, hard))


def _cached_files(root: Path) -> list[Path]:
    return [p for p in root.rglob(f"*{SUFFIX}") if p.is_file()] if root.exists() else []


def _make_room(root: Path, needed: int, limit: int, keep: set[Path]) -> int:
    """Removes the least recently used shards under `root` (not those in `keep`, nor those
    another reader has pinned) until `needed` more bytes fit under `limit`; the bytes the
    cache then holds beyond its limit (shards in use elsewhere), or 0."""
    _remove_orphaned_parts(root)
    files = sorted(_cached_files(root), key=lambda p: p.stat().st_mtime)
    used = sum(p.stat().st_size for p in files)
    for path in files:
        if used + needed <= limit:
            break
        if path not in keep:
            used -= _remove_unpinned(path)
    return max(0, used + needed - limit)


#: A half-downloaded shard not written to for this long belongs to a process that is gone.
ORPHANED_PART_SECONDS = 3600


def _remove_orphaned_parts(root: Path) -> None:
    """Removes the half-downloaded files of processes that are gone (killed mid-download):
    `_download`'s `.part` files that nothing has written to for `ORPHANED_PART_SECONDS`. Their
    age tells, not their process id, which another container sharing the cache may reuse."""
    for part in root.rglob(".*.part") if root.exists() else []:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - part.stat().st_mtime > ORPHANED_PART_SECONDS:
                part.unlink(missing_ok=True)


def _remove_unpinned(path: Path) -> int:
    """Removes the cached shard unless a reader pins it: the bytes removed (0 when pinned)."""
    try:
        with open(path, "rb") as candidate:
            fcntl.flock(candidate, fcntl.LOCK_EX | fcntl.LOCK_NB)
            size = os.fstat(candidate.fileno()).st_size
            path.unlink()
            return size
    except (BlockingIOError, FileNotFoundError):  # pinned, or gone already
        return 0


def local_copy(
    store: ArtifactStore,
    prefix: str,
    split: str,
    manifest: SplitShards,
    cache_dir: Path,
    *,
    limit_bytes: int,
) -> PinnedShards:
    """The whole split's shards in the local cache, pinned for the caller (`cache_shards`);
    a split larger than the cache is refused, with the setting to raise (a reader that does
    not need it whole reads it a window at a time: `shard_windows`)."""
    if manifest.bytes > limit_bytes:
        raise DataError(
            f"the {split} split of {prefix} is {manifest.bytes / 2**30:.2f} GiB of shards, more "
            f"than the local shard cache's {limit_bytes / 2**30:.2f} GiB: raise "
            "COMPARE_MODELS_SHARD_CACHE_GIB on the worker"
        )
    return cache_shards(store, prefix, manifest.shards, cache_dir, limit_bytes=limit_bytes)


def cache_shards(
    store: ArtifactStore,
    prefix: str,
    shards: list[ShardInfo],
    cache_dir: Path,
    *,
    limit_bytes: int,
) -> PinnedShards:
    """Shards of a split in the local cache, pinned for the caller (`PinnedShards`), each
    checked against its SHA-256 (copied from the bucket where missing or different: to a file
    of this process's own, checked, then renamed into place, so trainings sharing a host never
    read each other's half-written copy). Room is made by evicting the least recently used
    shards that no reader pins; when the pinned ones leave too little, the cache runs over its
    limit until they are let go, and says so. A shard whose stored bytes do not match is
    refused by name and noted for the next run's data stage; nothing is read from it.

    The cache's lock is held only to pin, evict and rename: the hashing and the downloads run
    outside it, so other processes on the host wait for none of them."""
    paths = [inside(cache_dir, s.key, what="shard cache path") for s in shards]
    root = inside(cache_dir, layout.DATASETS, what="shard cache path")  # resolved, as `paths`
    parts: dict[int, Path] = {}
    early = PinnedShards([])
    try:
        with _locked(root):
            present = [
                i for i, (s, p) in enumerate(zip(shards, paths, strict=True))
                if p.exists() and p.stat().st_size == s.bytes
            ]  # fmt: skip
            early = PinnedShards([paths[i] for i in present])  # not evicted while hashed
            missing = sorted(set(range(len(shards))) - set(present))
            needed = sum(shards[i].bytes for i in missing)
            _say_over(root, _make_room(root, needed, limit_bytes, set(paths)), limit_bytes)
        fetch = missing + [i for i in present if sha256_file(paths[i]) != shards[i].sha256]
        with ThreadPoolExecutor(max_workers=DOWNLOADS) as pool:
            futures = {i: pool.submit(_download, store, prefix, shards[i], paths[i]) for i in fetch}
        parts.update({i: f.result() for i, f in futures.items() if f.exception() is None})
        for future in futures.values():
            if future.exception() is not None:
                raise future.exception()  # the first failure (the others' files are removed)
        with _locked(root):
            for i, part in parts.items():
                os.replace(part, paths[i])
            pinned = PinnedShards(paths)
            for path in paths:
                os.utime(path)  # recently used
        return pinned
    finally:
        early.close()
        for part in parts.values():
            part.unlink(missing_ok=True)  # left only where a later step failed


def _say_over(root: Path, over: int, limit_bytes: int) -> None:
    """Says that the cache runs over its limit: once a process at the warning's level (a split
    read a window at a time asks again at every window), then at debug level."""
    if not over:
        return
    level = logging.DEBUG if root in _warned_over else logging.WARNING
    _warned_over.add(root)
    log.log(
        level,
        "the local shard cache %s runs %.2f GiB over its %.2f GiB limit: the shards it would "
        "evict are being read (by other trainings on this host, or by this one's other splits)",
        root, over / 2**30, limit_bytes / 2**30,
    )  # fmt: skip


def _download(store: ArtifactStore, prefix: str, shard: ShardInfo, path: Path) -> Path:
    """One shard downloaded beside its place in the cache, to a file of this thread's own, and
    checked: the file (the caller renames it into place)."""
    part = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.part")
    try:
        store.download(shard.key, part)
        sha = sha256_file(part)
        if sha != shard.sha256:
            _note_damaged(store, prefix, shard.key)
            raise DataError(
                f"shard {store.uri(shard.key)} is damaged (SHA-256 {sha[:16]}..., its manifest "
                f"says {shard.sha256[:16]}...): it was not read, and the next run's data stage "
                "rebuilds it from the source images"
            )
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return part


def load_labels(store: ArtifactStore, prefix: str, manifest: SplitShards) -> np.ndarray:
    payload = store.get_bytes_if_exists(manifest.labels_key, max_bytes=1024 + 8 * manifest.images)
    if payload is None or _sha256(payload) != manifest.labels_sha256:
        if payload is not None:
            _note_damaged(store, prefix, manifest.labels_key)
        raise DataError(
            f"the labels {store.uri(manifest.labels_key)} are missing or damaged: the next run's "
            "data stage rebuilds them from the source images"
        )
    y = np.load(io.BytesIO(payload), allow_pickle=False)
    if y.ndim != 1 or len(y) != manifest.images or y.dtype.kind not in "iu":
        raise DataError(
            f"the labels {store.uri(manifest.labels_key)} are not {manifest.images} integers"
        )
    return y.astype(np.int64)


# ── reading ──────────────────────────────────────────────────────────────────


class ImageIndex:
    """A split's images by index (random access; safe to share between the threads that
    prepare batches): `reader[indices]` gives them scaled to [0, 1] as float32 (the
    normalisation, batch by batch), `pixels(indices)` as uint8."""

    shape: tuple[int, int, int]

    def __len__(self) -> int:
        raise NotImplementedError

    def pixels(self, indices) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        """Lets its shards go (evictable again)."""

    def __getitem__(self, indices) -> np.ndarray:
        if isinstance(indices, slice):
            indices = range(*indices.indices(len(self)))
        return self.pixels(indices).astype(np.float32) / np.float32(255.0)

    def all_pixels(self, chunk: int = 4096) -> np.ndarray:
        """Every image, in order (uint8): the in-memory path."""
        out = np.empty((len(self), *self.shape), np.uint8)
        for start in range(0, len(self), chunk):
            out[start : start + chunk] = self.pixels(range(start, min(len(self), start + chunk)))
        return out


def as_pixels(records: list[bytes], shape: tuple[int, int, int]) -> np.ndarray:
    """Records read from shards as uint8 images of `shape`, each checked for its size."""
    size = int(np.prod(shape))
    if any(len(r) != size for r in records):
        raise DataError(f"a shard record is not one {shape} uint8 image")
    return np.frombuffer(b"".join(records), dtype=np.uint8).reshape((len(records), *shape))


class ShardReader(ImageIndex):
    """A split's images by index, from its shards in the local cache, all pinned while it
    lives."""

    def __init__(self, shards: PinnedShards, manifest: SplitShards):
        from array_record.python.array_record_data_source import ArrayRecordDataSource

        self.shape = image_shape(manifest.image_size)
        self._pinned = shards  # held while the reader lives: no eviction under it
        try:
            self._source = ArrayRecordDataSource([str(p) for p in shards.paths])
            if len(self._source) != manifest.images:
                raise DataError(
                    f"the shards of {shards.paths[0].parent} hold {len(self._source)} images, "
                    f"their manifest says {manifest.images}"
                )
        except BaseException:
            shards.close()
            raise

    def close(self) -> None:
        self._pinned.close()

    def __len__(self) -> int:
        return len(self._source)

    def pixels(self, indices) -> np.ndarray:
        return as_pixels(self._source.__getitems__([int(i) for i in indices]), self.shape)
