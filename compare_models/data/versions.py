"""Dataset versions: immutable snapshots of a folder source, stored once in S3.

A version is a manifest with one row per file of the folder: its path, size, change stamp,
the SHA-256 of its bytes (computed here; an S3 ETag is no content hash for multipart
uploads), its class and split, or why it was skipped. Its id is the SHA-256 of the sorted
rows (paths, hashes, classes, splits, skip reasons) with the split settings and the resize
method, so the same content always makes the same version.

A version is made by `compare_models.data.snapshot`.

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
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compare_models.config import IMAGE_SIZE, ImageSide, SplitSpec, image_shape
from compare_models.data.errors import DataError, short
from compare_models.data.folders import (
    CLASS_NAME,
    FolderSource,
)
from compare_models.data.safety import shown
from compare_models.storage import layout

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
    image_size: ImageSide = Field(
        default=IMAGE_SIZE,
        description="The side every image was resized to (versions before image sizes: 32)",
    )


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


def compute_version_id(
    rows: Iterable[ImageRow], spec: SplitSpec, resize: str, size: int = IMAGE_SIZE
) -> str:
    """The version's id: the SHA-256 of its rows, split, resizing and image size (at 32, the
    payload of every version made before image sizes, so their ids stay theirs)."""
    payload = json.dumps(
        {
            "rows": [r.identity() for r in sorted(rows, key=lambda r: r.key)],
            "split": spec.identity(),
            "resize": resize,
            "size": [size, size],
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
        compute_version_id(version.rows, s.split, s.resize, s.image_size) != version_id
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


def latest_version(
    store: ArtifactStore, source: FolderSource, size: int = IMAGE_SIZE
) -> DatasetVersion | None:
    """The source's newest version at image size `size`, or None (none yet, or a pointer that
    is not valid)."""
    payload = store.get_bytes_if_exists(
        layout.folder_latest_key(source.location, size), max_bytes=4096
    )
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
    s = version.summary
    return version if s.source == source.location and s.image_size == size else None


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


# ── a version's images ───────────────────────────────────────────────────────


def version_arrays(
    version: DatasetVersion, store: ArtifactStore, scratch: Path
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict[str, list[str]]]:
    """Each split's (uint8 images, labels) in key order, and each split's keys (the order).

    The images are arrays mapped from files in `scratch` (the caller's to remove), filled one
    pack at a time: memory holds one pack whatever the version's size."""
    names, size = version.summary.class_names, version.summary.image_size
    shape = image_shape(size)
    index = {c: i for i, c in enumerate(names)}
    rows = {split: version.used(split) for split in ("train", "val", "test")}
    places: dict[str, list[tuple[str, int]]] = defaultdict(list)  # sha -> (split, row)
    wanted: dict[str, set[str]] = defaultdict(set)  # pack digest -> shas
    for split, split_rows in rows.items():
        for i, r in enumerate(split_rows):
            places[r.sha256].append((split, i))
            wanted[r.pixels].add(r.sha256)
    images = {
        split: np.lib.format.open_memmap(
            scratch / f"{split}.npy", mode="w+", dtype=np.uint8, shape=(len(split_rows), *shape)
        )
        if split_rows
        else np.zeros((0, *shape), np.uint8)
        for split, split_rows in rows.items()
    }
    filled: set[str] = set()
    for digest, shas in wanted.items():
        key = layout.pixels_key(digest, (size, size))
        payload = store.get_bytes_if_exists(key, max_bytes=MAX_PACK_BYTES)
        if payload is None or hashlib.sha256(payload).hexdigest() != digest:
            raise DataError(
                f"the decoded images {store.uri(key)} of dataset version {version.version_id[:12]} are "
                "missing or damaged; snapshot the folder again (its images are decoded anew)"
            )
        with np.load(io.BytesIO(payload), allow_pickle=False) as pack:
            keys, x = pack["sha256"], pack["x"]
            if x.dtype != np.uint8 or x.shape[1:] != shape or len(keys) != len(x):
                raise DataError(
                    f"{store.uri(key)} does not hold {size}x{size} RGB images; delete it and "
                    "snapshot again"
                )
            for sha, image in zip(keys, x, strict=True):
                sha = sha.decode()
                if sha in shas:
                    for split, i in places[sha]:
                        images[split][i] = image
                    filled.add(sha)
        # the loop's last view (`image`) would keep this pack's array alive into the next
        payload = x = image = None
    missing = set(places) - filled
    if missing:
        raise DataError(
            f"{len(missing)} image(s) of dataset version {version.version_id[:12]} are not in the "
            f"packs its rows name (e.g. SHA-256 {sorted(missing)[0][:12]}); snapshot the folder "
            "again (its images are decoded anew)"
        )
    splits, order = {}, {}
    for split, split_rows in rows.items():
        y = np.array([index[r.class_name] for r in split_rows], dtype=np.int64)
        splits[split], order[split] = (images[split], y), [r.sha256 for r in split_rows]
    return splits, order
