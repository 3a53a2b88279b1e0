"""A snapshot of a folder source: a new immutable dataset version (`compare_models.data.versions`).

`snapshot` lists the folder once and reuses the rows of the source's previous version for
files whose size and stamp are unchanged, so an unchanged folder costs one listing and no
download; only new or changed files are downloaded and decoded, and their pixels are kept in
packs keyed by their files' SHA-256 (`layout.pixels_key`), so no image is decoded twice.
"""

from __future__ import annotations

import hashlib
import io
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import numpy as np

from compare_models.config import FolderPolicy, SplitSpec
from compare_models.data.errors import DataError, short
from compare_models.data.folders import (
    FolderEntry,
    FolderReader,
    FolderSource,
    Place,
    folder_layout,
    list_folder,
    place,
)
from compare_models.data.images import resize_method, to_input
from compare_models.storage import layout
from compare_models.storage.errors import ObjectExists, StoreError

if TYPE_CHECKING:
    from compare_models.storage.store import ArtifactStore

from compare_models.data.versions import (
    DatasetVersion,
    ImageRow,
    VersionSummary,
    changes,
    compute_version_id,
    hash_split,
    latest_version,
    read_version,
)


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
    reader: FolderReader, key: str, known: set[str], size: int
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
        pixels, _ = to_input(payload, (size, size))
    except DataError as exc:
        return sha, None, str(exc)
    return sha, pixels, None


#: The most pixel bytes of one pack of decoded images: a folder's new images are stored in
#: packs of this size, so that no pack comes near `versions.MAX_PACK_BYTES` at any image size.
PACK_BYTES = 256 << 20


def _store_pack(store: ArtifactStore, shas: list[str], pixels: list[np.ndarray], size: int) -> str:
    """Stores the newly decoded images as one pack (under their size); returns its digest."""
    buffer = io.BytesIO()
    np.savez(buffer, sha256=np.array(shas, dtype="S64"), x=np.stack(pixels).astype(np.uint8))
    digest = hashlib.sha256(buffer.getvalue()).hexdigest()
    key = layout.pixels_key(digest, (size, size))
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
    """The folder's current version at `policy.image_size`: reused rows for unchanged files, new
    ones read and decoded, stored write-once (with its summary), and the source's latest pointer
    at that size moved to it."""
    started = time.perf_counter()
    timings = {}
    size, resize = policy.image_size, resize_method(policy.image_size)
    entries = list_folder(source, store, policy.max_files)
    timings["list"] = time.perf_counter() - started
    previous = latest_version(store, source, size)
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
    # The files are read and decoded a pack's worth at a time, and each full pack is stored
    # before the next is decoded, so that memory holds about two packs whatever the folder's
    # size. The packs are the same as when every file was decoded first: `per_pack` new images
    # each, in the order of the listing.
    per_pack = max(1, PACK_BYTES // (size * size * 3))
    decoded = 0  # new images decoded (each SHA-256 once)
    waiting: list[tuple[str, np.ndarray]] = []  # decoded, not yet in a pack
    known = set(known_pixels)

    def store_pack(count: int) -> None:
        nonlocal waiting
        shas = [sha for sha, _ in waiting[:count]]
        digest = _store_pack(store, shas, [pixels for _, pixels in waiting[:count]], size)
        known_pixels.update(dict.fromkeys(shas, digest))
        waiting = waiting[count:]

    decoding = packing = 0.0
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for start in range(0, len(to_read), per_pack):
            chunk = to_read[start : start + per_pack]
            t = time.perf_counter()
            results = list(
                pool.map(lambda item: _read_and_decode(reader, item[0].key, known, size), chunk)
            )
            decoding += time.perf_counter() - t
            for (entry, where), (sha, pixels, why) in zip(chunk, results, strict=True):
                if pixels is not None and sha not in known:
                    known.add(sha)
                    decoded += 1
                    waiting.append((sha, pixels))
                rows[entry.key] = ImageRow(
                    key=entry.key, size=entry.size, stamp=entry.stamp, sha256=sha,
                    class_name=where.class_name, folder_split=where.folder_split, skipped=why,
                )  # fmt: skip
            del results
            t = time.perf_counter()
            while len(waiting) >= per_pack:
                store_pack(per_pack)
            packing += time.perf_counter() - t
    t = time.perf_counter()
    if waiting:
        store_pack(len(waiting))
    timings["read_and_decode"] = decoding
    timings["store_packs"] = packing + time.perf_counter() - t
    rows = {
        k: r.model_copy(update={"pixels": known_pixels.get(r.sha256)}) if r.skipped is None else r
        for k, r in rows.items()
    }
    resolved = _resolve_rows([rows[e.key] for e in entries], spec)
    names, counts = _summary_counts(resolved)
    version_id = compute_version_id(resolved, spec, resize, size)
    if previous is not None and previous.version_id == version_id:
        return Snapshot(
            previous, len(entries), len(to_read), decoded, False, False,
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
        resize=resize,
        image_size=size,
    )
    version = DatasetVersion(summary=summary, rows=resolved)
    version = version.model_copy(
        update={"summary": summary.model_copy(update={"changes": changes(previous, version)})}
    )
    stored = _store_version(store, version)
    store.put_json(
        {"version_id": version_id, "source": source.location},
        layout.folder_latest_key(source.location, size),
        overwrite=True,
    )
    return Snapshot(
        version, len(entries), len(to_read), decoded, stored, True,
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
