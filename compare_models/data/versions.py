"""Dataset versions: immutable snapshots of a folder source, stored once in S3.

A version is a manifest with one row per file of the folder: its path, size, change stamp,
the SHA-256 of its bytes (computed here; an S3 ETag is no content hash for multipart
uploads), its class and split, or why it was skipped. Its id is the SHA-256 of the sorted
rows (paths, hashes, classes, splits, skip reasons) with the split settings and the resize
method, so the same content always makes the same version.

`snapshot` lists the folder once and reuses the rows of the source's previous version for
files whose size and stamp are unchanged, so an unchanged folder costs one listing and no
download; only new or changed files are downloaded and decoded, and their pixels are kept in
packs keyed by their files' SHA-256 (`layout.pixels_key`), so no image is decoded twice.

The split is the `hash` protocol's: an image's split comes from its content's SHA-256
salted with the split seed, so it keeps its split in every later version, and exact
duplicates share one. A file whose bytes another file already has is a duplicate: only the
first (by path) is used; the same bytes under two classes are skipped, both. In the fixed
train/test layout, test images are always test, and a training file with the bytes of a
test image is skipped, so no image is ever in training and in test.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compare_models.config import IMAGE_SHAPE, FolderPolicy, SplitSpec
from compare_models.data.errors import DataError, short
from compare_models.data.folders import (
    CLASS_NAME,
    FolderEntry,
    FolderReader,
    FolderSource,
    Place,
    folder_layout,
    list_folder,
    place,
)
from compare_models.data.images import RESIZE, to_input
from compare_models.data.safety import shown
from compare_models.storage import layout
from compare_models.storage.store import ObjectExists, StoreError

if TYPE_CHECKING:
    from compare_models.storage.store import ArtifactStore

SCHEMA_VERSION = 1
SplitName = Literal["train", "val", "test"]
SHA256 = r"^[0-9a-f]{64}$"
#: A version read back from the bucket is refused beyond this size (a row is about 300 bytes).
MAX_VERSION_BYTES = 1 << 30
MAX_PACK_BYTES = 4 << 30


class ImageRow(BaseModel):
    """One file of the folder in a version."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: str = Field(min_length=1, max_length=4096)
    size: int = Field(ge=0)
    stamp: str = Field(max_length=200)
    sha256: str | None = Field(default=None, pattern=SHA256)
    class_name: str | None = Field(default=None, max_length=64)
    folder_split: Literal["train", "test"] | None = None
    split: SplitName | None = None
    skipped: str | None = Field(default=None, max_length=500)
    duplicate_of: str | None = Field(default=None, max_length=4096)
    pixels: str | None = Field(default=None, pattern=SHA256)

    @model_validator(mode="after")
    def _consistent(self) -> ImageRow:
        if self.used and (".." in self.key.split("/") or self.key.startswith("/")):
            raise ValueError(f"row key {self.key[:200]!r} is not a path inside the folder")
        if self.class_name is not None and not CLASS_NAME.fullmatch(self.class_name):
            raise ValueError(f"class name {self.class_name!r} is not a plain name")
        return self

    @property
    def used(self) -> bool:
        """Whether the image is in the version's splits (not skipped, not a duplicate)."""
        return self.skipped is None and self.duplicate_of is None

    def identity(self) -> tuple:
        """What the version id hashes: the content, never the stamp or where pixels are kept."""
        return (self.key, self.sha256, self.class_name, self.split, self.skipped, self.duplicate_of)


class ClassChange(BaseModel):
    """Images (by content) of one class added and removed between two versions."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    added: int = 0
    removed: int = 0


class VersionSummary(BaseModel):
    """A version's counts: what `compare-models datasets` lists and runs record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version_id: str = Field(pattern=SHA256)
    source: str
    name: str
    layout: Literal["class-folders", "train-test-folders"]
    created_at: str
    parent: str | None = Field(default=None, pattern=SHA256)
    class_names: list[str]
    counts: dict[str, dict[SplitName, int]]
    files: int
    images: int
    skipped: int
    duplicates: int
    leaked: int
    changes: dict[str, ClassChange] = Field(
        default_factory=dict, description="Per class, against the parent version"
    )
    split: SplitSpec
    resize: str


class DatasetVersion(BaseModel):
    """A stored version: its summary and its rows (sorted by key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    summary: VersionSummary
    rows: list[ImageRow]

    @property
    def version_id(self) -> str:
        return self.summary.version_id

    @model_validator(mode="after")
    def _rows_complete(self) -> DatasetVersion:
        for row in self.rows:
            if row.used and (
                row.split is None
                or row.sha256 is None
                or row.pixels is None
                or row.class_name not in self.summary.class_names
            ):
                raise ValueError(
                    f"row {row.key!r} is used but has no split, SHA-256, pixels or known class"
                )
        return self

    def used(self, split: str | None = None) -> list[ImageRow]:
        return [r for r in self.rows if r.used and (split is None or r.split == split)]

    def skipped_rows(self) -> list[ImageRow]:
        return [r for r in self.rows if r.skipped is not None]


def compute_version_id(rows: Iterable[ImageRow], spec: SplitSpec, resize: str) -> str:
    payload = json.dumps(
        {
            "rows": [r.identity() for r in sorted(rows, key=lambda r: r.key)],
            "split": spec.identity(),
            "resize": resize,
            "size": IMAGE_SHAPE[:2],
        },
        separators=(",", ":"),
    )
    return hashlib.sha256(payload.encode()).hexdigest()


def hash_split(sha256: str, spec: SplitSpec, folder_split: str | None) -> SplitName:
    """The split of an image with these bytes: a salted hash of its content, bucketed by the
    fractions (in the fixed layout: test stays test, training is hashed into train and val)."""
    if folder_split == "test":
        return "test"
    digest = hashlib.sha256(f"{spec.seed}:{sha256}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    f = spec.fractions
    if folder_split == "train":
        return "train" if u < f.train / (f.train + f.val) else "val"
    return "train" if u < f.train else "val" if u < f.train + f.val else "test"


# ── reading back ─────────────────────────────────────────────────────────────


def read_version(store: ArtifactStore, version_id: str) -> DatasetVersion:
    """A stored version, validated (it is untrusted) and checked against its id."""
    if not layout.VERSION_ID.fullmatch(version_id or ""):
        raise DataError(f"{shown(version_id)} is not a dataset version id (64 hex digits)")
    key = layout.version_key(version_id)
    payload = store.get_bytes_if_exists(key, max_bytes=MAX_VERSION_BYTES)
    if payload is None:
        raise DataError(
            f"there is no dataset version {version_id} ({store.uri(key)}); "
            "`compare-models datasets` lists the stored ones"
        )
    try:
        version = DatasetVersion.model_validate_json(payload)
    except ValidationError as exc:
        raise DataError(f"{store.uri(key)} is not a valid dataset version ({short(exc)})") from None
    s = version.summary
    if (
        compute_version_id(version.rows, s.split, s.resize) != version_id
        or s.version_id != version_id
    ):
        raise DataError(
            f"{store.uri(key)} does not hash to its id {version_id[:12]}: it was changed after it was "
            "written; restore it from a backup, or snapshot the folder again"
        )
    return version


def list_versions(store: ArtifactStore) -> list[VersionSummary]:
    """Every stored version's summary, oldest first (a damaged one is left out)."""
    found = []
    for prefix in store.list_prefixes(layout.VERSIONS):
        version_id = layout.version_of(prefix)
        if not layout.VERSION_ID.fullmatch(version_id):
            continue
        payload = store.get_bytes_if_exists(
            layout.version_summary_key(version_id), max_bytes=1 << 24
        )
        try:
            summary = VersionSummary.model_validate_json(payload or b"")
        except ValidationError:
            continue
        if summary.version_id == version_id:
            found.append(summary)
    return sorted(found, key=lambda s: (s.created_at, s.version_id))


def latest_version(store: ArtifactStore, source: FolderSource) -> DatasetVersion | None:
    """The source's newest version, or None (none yet, or a pointer that is not valid)."""
    payload = store.get_bytes_if_exists(layout.folder_latest_key(source.location), max_bytes=4096)
    try:
        version_id = json.loads(payload)["version_id"] if payload else None
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(version_id, str) or not layout.VERSION_ID.fullmatch(version_id):
        return None
    try:
        version = read_version(store, version_id)
    except DataError:
        return None
    return version if version.summary.source == source.location else None


# ── changes between versions ─────────────────────────────────────────────────


def changes(old: DatasetVersion | None, new: DatasetVersion) -> dict[str, ClassChange]:
    """Per class, the images (by content) in `new` but not `old`, and in `old` but not `new`."""

    def images(version: DatasetVersion | None) -> dict[str, set[str]]:
        by_class: dict[str, set[str]] = defaultdict(set)
        for row in version.used() if version else []:
            by_class[row.class_name].add(row.sha256)
        return by_class

    before, after = images(old), images(new)
    return {
        c: ClassChange(added=len(after[c] - before[c]), removed=len(before[c] - after[c]))
        for c in sorted(set(before) | set(after))
    }


# ── the snapshot ─────────────────────────────────────────────────────────────


@dataclass
class Snapshot:
    """A version and what making it cost."""

    version: DatasetVersion
    listed: int
    downloaded: int = 0
    decoded: int = 0
    stored: bool = False  # a new version was written (False: the same content was there)
    changed: bool = False  # not the source's latest version before (its first, or new content)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)


def _read_and_decode(
    reader: FolderReader, key: str, known: set[str]
) -> tuple[str | None, np.ndarray | None, str | None]:
    """(SHA-256, pixels or None when already known, skip reason or None) of one file."""
    try:
        payload = reader.read(key)
    except (DataError, StoreError, OSError) as exc:
        return None, None, f"it could not be read ({short(exc)})"
    sha = hashlib.sha256(payload).hexdigest()
    if sha in known:
        return sha, None, None
    try:
        pixels, _ = to_input(payload)
    except DataError as exc:
        return sha, None, str(exc)
    return sha, pixels, None


def _store_pack(store: ArtifactStore, shas: list[str], pixels: list[np.ndarray]) -> str:
    """Stores the newly decoded images as one pack; returns its digest."""
    buffer = io.BytesIO()
    np.savez(buffer, sha256=np.array(shas, dtype="S64"), x=np.stack(pixels).astype(np.uint8))
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    key = layout.pixels_key(digest)
    if not store.exists(key):
        store.put_bytes(buffer.getvalue(), key, overwrite=True)  # content-addressed
    return digest


def _resolve_rows(rows: list[ImageRow], spec: SplitSpec) -> list[ImageRow]:
    """Duplicates, conflicting labels, leaks between the fixed splits, and each image's split."""
    by_sha: dict[str, list[ImageRow]] = defaultdict(list)
    for row in rows:
        if row.skipped is None and row.sha256:
            by_sha[row.sha256].append(row)
    resolved: dict[str, ImageRow] = {}
    for sha, group in by_sha.items():
        classes = sorted({r.class_name for r in group})
        if len(classes) > 1:
            why = f"the same image is in the classes {', '.join(classes)}"
            for r in group:
                resolved[r.key] = r.model_copy(update={"skipped": why, "split": None})
            continue
        # the first test file is kept where there is one: a training copy of a test image
        # would leak it into training
        group = sorted(group, key=lambda r: (r.folder_split != "test", r.key))
        first = group[0]
        resolved[first.key] = first.model_copy(
            update={"split": hash_split(sha, spec, first.folder_split), "duplicate_of": None}
        )
        for r in group[1:]:
            resolved[r.key] = r.model_copy(update={"split": None, "duplicate_of": first.key})
    return [resolved.get(r.key, r.model_copy(update={"split": None})) for r in rows]


def _summary_counts(rows: list[ImageRow]) -> tuple[list[str], dict[str, dict[str, int]]]:
    counts: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        if r.used:
            counts[r.class_name][r.split] += 1
    names = sorted(counts)
    return names, {c: {s: counts[c][s] for s in ("train", "val", "test")} for c in names}


def check_policy(version: DatasetVersion, policy: FolderPolicy) -> None:
    """Refuses a version the run must not train on: too many files skipped, a class too small,
    fewer than two classes. The message lists the first reasons."""
    s = version.summary
    skipped = version.skipped_rows()
    if s.files and len(skipped) > policy.max_skipped_fraction * s.files:
        reasons = Counter(r.skipped for r in skipped).most_common(3)
        raise DataError(
            f"{len(skipped):,} of the {s.files:,} files of {s.source} were skipped, more than "
            f"folder.max_skipped_fraction ({policy.max_skipped_fraction:.1%}); most often because "
            + "; ".join(f"{why} ({n:,} files)" for why, n in reasons)
            + f". See `compare-models dataset {s.version_id[:12]}` for every file and reason"
        )
    if len(s.class_names) < 2:
        raise DataError(
            f"{s.source} has {len(s.class_names)} class folder(s) with images; a classifier needs two "
            "or more (<root>/<class>/<image> or <root>/train|test/<class>/<image>)"
        )
    small = {
        c: sum(n.values())
        for c, n in s.counts.items()
        if sum(n.values()) < policy.min_images_per_class
    }
    if small:
        raise DataError(
            f"classes with fewer than folder.min_images_per_class ({policy.min_images_per_class}) images in "
            f"{s.source}: " + ", ".join(f"{c} ({n})" for c, n in sorted(small.items()))
        )
    empty = [c for c, n in s.counts.items() if n["train"] == 0 or n["test"] == 0]
    if empty:
        raise DataError(
            f"classes with no training or no test image in {s.source}: {', '.join(empty)}; add images"
        )


def snapshot(
    source: FolderSource,
    store: ArtifactStore,
    spec: SplitSpec,
    policy: FolderPolicy,
    *,
    name: str,
    workers: int = 8,
) -> Snapshot:
    """The folder's current version: reused rows for unchanged files, new ones read and decoded,
    stored write-once (with its summary), and the source's latest pointer moved to it."""
    started = time.perf_counter()
    timings = {}
    entries = list_folder(source, store, policy.max_files)
    timings["list"] = time.perf_counter() - started
    previous = latest_version(store, source)
    earlier = {r.key: r for r in previous.rows} if previous else {}
    known_pixels = {r.sha256: r.pixels for r in previous.rows if r.pixels} if previous else {}
    kind = folder_layout(entries)

    rows: dict[str, ImageRow] = {}
    to_read: list[tuple[FolderEntry, Place]] = []
    for entry in entries:
        where = place(entry, kind, policy.max_image_bytes)
        if isinstance(where, str):
            rows[entry.key] = ImageRow(
                key=entry.key, size=entry.size, stamp=entry.stamp, skipped=where
            )
            continue
        old = earlier.get(entry.key)
        if (
            old is not None
            and old.size == entry.size
            and old.stamp == entry.stamp
            and (old.pixels or (old.skipped and old.sha256))
        ):
            rows[entry.key] = ImageRow(
                key=entry.key, size=entry.size, stamp=entry.stamp, sha256=old.sha256,
                class_name=where.class_name, folder_split=where.folder_split,
                skipped=None if old.pixels else old.skipped, pixels=old.pixels,
            )  # fmt: skip
        else:
            to_read.append((entry, where))

    reader = FolderReader(source, store, policy.max_image_bytes)
    new_shas: list[str] = []
    new_pixels: list[np.ndarray] = []
    t = time.perf_counter()
    known = set(known_pixels)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(lambda item: _read_and_decode(reader, item[0].key, known), to_read))
    pending: dict[str, int] = {}
    for (entry, where), (sha, pixels, why) in zip(to_read, results, strict=True):
        if pixels is not None and sha not in pending:
            pending[sha] = len(new_pixels)
            new_shas.append(sha)
            new_pixels.append(pixels)
        rows[entry.key] = ImageRow(
            key=entry.key, size=entry.size, stamp=entry.stamp, sha256=sha,
            class_name=where.class_name, folder_split=where.folder_split, skipped=why,
        )  # fmt: skip
    timings["read_and_decode"] = time.perf_counter() - t
    if new_pixels:
        digest = _store_pack(store, new_shas, new_pixels)
        known_pixels.update(dict.fromkeys(new_shas, digest))
    rows = {
        k: r.model_copy(update={"pixels": known_pixels.get(r.sha256)}) if r.skipped is None else r
        for k, r in rows.items()
    }
    resolved = _resolve_rows([rows[e.key] for e in entries], spec)
    names, counts = _summary_counts(resolved)
    version_id = compute_version_id(resolved, spec, RESIZE)
    if previous is not None and previous.version_id == version_id:
        return Snapshot(
            previous, len(entries), len(to_read), len(new_pixels), False, False,
            time.perf_counter() - started, timings,
        )  # fmt: skip
    summary = VersionSummary(
        version_id=version_id,
        source=source.location,
        name=name,
        layout=kind,
        created_at=datetime.now(UTC).isoformat(),
        parent=previous.version_id if previous else None,
        class_names=names,
        counts=counts,
        files=len(resolved),
        images=sum(r.used for r in resolved),
        skipped=sum(r.skipped is not None for r in resolved),
        duplicates=sum(r.duplicate_of is not None for r in resolved),
        leaked=_leaked(resolved),
        split=spec,
        resize=RESIZE,
    )
    version = DatasetVersion(summary=summary, rows=resolved)
    version = version.model_copy(
        update={"summary": summary.model_copy(update={"changes": changes(previous, version)})}
    )
    stored = _store_version(store, version)
    store.put_json(
        {"version_id": version_id, "source": source.location},
        layout.folder_latest_key(source.location),
        overwrite=True,
    )
    return Snapshot(
        version, len(entries), len(to_read), len(new_pixels), stored, True,
        time.perf_counter() - started, timings,
    )  # fmt: skip


def _leaked(rows: list[ImageRow]) -> int:
    """Images (by SHA-256) both in training (train or val) and in test: 0 by construction,
    counted all the same, so that the run records it."""
    splits: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        if r.used:
            splits[r.sha256].add("test" if r.split == "test" else "training")
    return sum(len(s) > 1 for s in splits.values())


def _store_version(store: ArtifactStore, version: DatasetVersion) -> bool:
    """Writes the version and then its summary, once: False where the same id was there."""
    key, summary_key = (
        layout.version_key(version.version_id),
        layout.version_summary_key(version.version_id),
    )
    stored = False
    try:
        if not store.exists(key):
            store.put_bytes(version.model_dump_json().encode(), key)
            stored = True
    except ObjectExists:  # another snapshot of the same content won the race
        pass
    if not stored:
        try:
            read_version(store, version.version_id)
        except DataError:
            # changed after it was written: its id is the hash of this content, so writing it
            # again restores it (nothing of another version is lost)
            store.put_bytes(version.model_dump_json().encode(), key, overwrite=True)
            store.put_bytes(version.summary.model_dump_json().encode(), summary_key, overwrite=True)
    if not store.exists(summary_key):  # also where a crash came between the two writes
        summary = version.summary if stored else read_version(store, version.version_id).summary
        store.put_bytes(summary.model_dump_json().encode(), summary_key, overwrite=True)
    return stored


# ── a version's images ───────────────────────────────────────────────────────


def version_arrays(
    version: DatasetVersion, store: ArtifactStore
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, list[str]]]:
    """Each split's (uint8 images, labels) in key order, and each split's keys (the order)."""
    names = version.summary.class_names
    index = {c: i for i, c in enumerate(names)}
    wanted: dict[str, set[str]] = defaultdict(set)
    for r in version.used():
        wanted[r.pixels].add(r.sha256)
    pixels: dict[str, np.ndarray] = {}
    for digest, shas in wanted.items():
        key = layout.pixels_key(digest)
        payload = store.get_bytes_if_exists(key, max_bytes=MAX_PACK_BYTES)
        if payload is None or hashlib.sha256(payload).hexdigest() != digest:
            raise DataError(
                f"the decoded images {store.uri(key)} of dataset version {version.version_id[:12]} are "
                "missing or damaged; snapshot the folder again (its images are decoded anew)"
            )
        with np.load(io.BytesIO(payload), allow_pickle=False) as pack:
            keys, x = pack["sha256"], pack["x"]
            if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE or len(keys) != len(x):
                raise DataError(
                    f"{store.uri(key)} does not hold 32x32 RGB images; delete it and snapshot again"
                )
            for sha, image in zip(keys, x, strict=True):
                if sha.decode() in shas:
                    pixels[sha.decode()] = image
    splits, order = {}, {}
    for split in ("train", "val", "test"):
        rows = version.used(split)
        x = (
            np.stack([pixels[r.sha256] for r in rows])
            if rows
            else np.zeros((0, *IMAGE_SHAPE), np.uint8)
        )
        y = np.array([index[r.class_name] for r in rows], dtype=np.int64)
        splits[split], order[split] = (x, y), [r.sha256 for r in rows]
    return splits, order
