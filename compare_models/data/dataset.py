"""Data stage: fetch -> verify -> decode -> normalise -> split, cached in S3.

This module runs the stage (`prepare_dataset`), splits and normalises, and reads a prepared
split back (`load_split`). Getting the archive is `compare_models.data.sources`, reading it
`compare_models.data.decoding`; the names other modules used from here are re-exported.

Sources (`RunParams.data`):

* ``cifar10`` or an ``https://`` URL: the official CIFAR-10 python tarball (MD5 checked);
* a local path or ``s3://`` URI of that tarball, or of a ``.tar.gz`` of class-named image
  folders (``<root>/train/<class>/*.jpg``, ``<root>/test/<class>/*.jpg``);
* ``synthetic[:N]``: generated class-coloured noise for tests, labelled synthetic
  everywhere it appears (dataset name, manifest, report banner).

Caching: the raw archive is stored once under ``datasets/<name>/<digest>/raw/`` and the
prepared splits under ``datasets/<name>/<digest>/splits/<split-key>/`` where the
split key hashes the split settings and this module's format version. ``prepared.json``
is written last: a prepared folder without it is ignored and rebuilt.

Prepared splits keep pixels as uint8 (4x smaller than float32), as shards
(`compare_models.data.shards`; splits prepared before shards are one ``.npz`` each, and still
read). A reused preparation is checked against one listing of its shards (and the damage a
reader noted): what is missing or damaged is rebuilt from the source, and the reference says
what (`DatasetRef.repaired`). Normalisation (scale to [0, 1], as the report did) is applied
by `load_split` to a whole split, or batch by batch to a split read by index (`open_split`);
its statistics are recorded in ``prepared.json``.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from compare_models.config import (
    IMAGE_SIZE,
    NUM_CLASSES,
    FolderPolicy,
    ImageSide,
    Settings,
    SplitSpec,
    image_shape,
)
from compare_models.data.decoding import Decoded, decode_archive, synthetic_data
from compare_models.data.errors import DataError, describe, inside, short
from compare_models.data.files import sha256_file
from compare_models.data.folders import folder_source
from compare_models.data.safety import is_sha256, redact_url, shown
from compare_models.data.shard_windows import WindowedShardReader
from compare_models.data.shards import (
    ImageIndex,
    ShardReader,
    SplitShards,
    load_labels,
    local_copy,
    shard_problems,
    write_split,
)
from compare_models.data.snapshot import Snapshot, check_policy, snapshot
from compare_models.data.sources import (
    fetch_archive,
    name_characters,
    resolve_source,
    store_archive,
)
from compare_models.data.versions import DatasetVersion, read_version, version_arrays
from compare_models.storage import layout

if TYPE_CHECKING:
    from compare_models.storage.store import ArtifactStore

FORMAT_VERSION = 2  # bump when the prepared layout, its record or the split algorithm changes (2: test indices hash)
SPLITS = ("train", "val", "test")


# ── splitting and normalisation ────────────────────────────────────────────


def _subset(y: np.ndarray, a: int, b: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two disjoint, stratified (where possible) subsets of sizes a and b."""
    from sklearn.model_selection import train_test_split  # slow to import; only the split needs it

    idx = np.arange(len(y))
    if b == 0:
        chosen, _ = (
            (idx, None)
            if a == len(y)
            else train_test_split(idx, train_size=a, stratify=y, random_state=seed)
        )
        return np.sort(chosen), np.array([], dtype=np.int64)
    stratify = y if min(a, b) >= NUM_CLASSES else None
    first, second = train_test_split(
        idx, train_size=a, test_size=b, stratify=stratify, random_state=seed
    )
    return first, second


def split_indices(d: Decoded, spec: SplitSpec) -> dict[str, np.ndarray]:
    """Indices of each split: train and val into the archive's training set, test into its test set."""
    n_train, n_val, n_test = spec.sizes(len(d.y_test))
    if n_train + n_val > len(d.y_train):
        raise DataError(
            f"split {spec.protocol!r} needs {n_train} train + {n_val} validation = {n_train + n_val} images, but the "
            f"archive's training set has {len(d.y_train)}; choose smaller sizes"
        )
    if n_test > len(d.y_test):
        raise DataError(
            f"split asks for {n_test} test images, but the archive's test set has {len(d.y_test)}; choose a smaller size"
        )
    tr, va = _subset(d.y_train, n_train, n_val, spec.seed)
    te, _ = _subset(d.y_test, n_test, 0, spec.seed)
    return {"train": tr, "val": va, "test": te}


def indices_sha256(indices: dict[str, np.ndarray], splits: tuple[str, ...] = SPLITS) -> str:
    """SHA-256 of the split indices: equal hashes mean the same images in the same splits
    (with `splits=("test",)`: the same test images in the same order, what a paired
    comparison of two runs needs)."""
    digest = hashlib.sha256()
    for split in splits:
        digest.update(np.asarray(indices[split], dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()


def make_splits(
    d: Decoded, indices: dict[str, np.ndarray]
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        split: (d.x_test[idx], d.y_test[idx])
        if split == "test"
        else (d.x_train[idx], d.y_train[idx])
        for split, idx in indices.items()
    }


def normalisation_stats(x_train: np.ndarray, chunk: int = 1024) -> dict:
    """The normalisation applied (scale to [0, 1]) and the resulting train statistics, summed
    `chunk` images at a time (a float64 copy of a whole split is 8 bytes a pixel: 14 GB for
    35,000 images of 128x128)."""
    from sklearn.preprocessing import StandardScaler  # slow to import; only this needs it

    moments = StandardScaler()
    for start in range(0, len(x_train), chunk):
        moments.partial_fit(x_train[start : start + chunk].reshape(-1, 3).astype(np.float64) / 255)
    fitted = hasattr(moments, "mean_")  # not on an empty split
    mean, std = (moments.mean_, np.sqrt(moments.var_)) if fitted else (np.zeros(3), np.zeros(3))
    return {
        "method": "scale",
        "scale": 1 / 255,
        "offset": 0.0,
        "range": [0.0, 1.0],
        "train_channel_mean": mean.round(6).tolist(),
        "train_channel_std": std.round(6).tolist(),
    }


def normalise(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / np.float32(255.0)


# ── the stage ──────────────────────────────────────────────────────────────


class DatasetRef(BaseModel):
    """What later stages need to find the prepared data (small; passed between tasks)."""

    name: str
    synthetic: bool
    source: str
    archive_sha256: str | None
    prefix: str  # S3 prefix of the prepared splits
    class_names: list[str]
    sizes: dict[str, int]
    files: dict[str, dict] = Field(
        default_factory=dict,
        description='each split as one .npz, {"key", "sha256", "bytes"} (prepared before shards)',
    )
    shards: dict[str, SplitShards] = Field(
        default_factory=dict, description="each split's shards (`compare_models.data.shards`)"
    )
    normalisation: dict
    split_key: str | None = None
    split_indices_sha256: str | None = None
    test_indices_sha256: str | None = None
    version_id: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    skipped: int = 0
    duplicates: int = 0
    leaked: int = 0
    resize: str | None = None
    image_size: ImageSide = Field(
        default=IMAGE_SIZE,
        description="The side of its square images (CIFAR-10 and references before image sizes: 32)",
    )
    reused: bool = False
    repaired: dict[str, str] = Field(
        default_factory=dict,
        description="stored files this run's data stage found damaged or missing and rebuilt, "
        "and what was wrong with each",
    )
    seconds: float = 0.0

    def storage(self) -> dict[str, str]:
        """How it is stored, for people: its image size, shards and bytes."""
        if self.shards:
            stored = f"{sum(len(m.shards) for m in self.shards.values())} shards"
        else:
            stored = f"{len(self.files)} .npz files (prepared before shards)"
        return {
            "image size": f"{self.image_size}x{self.image_size}",
            "stored as": stored,
            "stored MiB": f"{self.stored_bytes / 2**20:,.1f}",
        }

    @property
    def stored_bytes(self) -> int:
        """The bytes of its stored splits."""
        if self.shards:
            return sum(m.bytes + 8 * m.images for m in self.shards.values())
        return sum(int(info.get("bytes", 0)) for info in self.files.values())


def split_key(spec: SplitSpec) -> str:
    payload = json.dumps({"v": FORMAT_VERSION, **spec.identity()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def check_ref(ref: DatasetRef, *, prefix: str | None = None) -> None:
    """Validate a DatasetRef read back from S3 (prepared.json) or passed between tasks: it is untrusted.
    Its prefix must be a splits prefix of its own dataset, each split file the key this project writes
    there, with a SHA-256."""
    match = layout.SPLITS_PREFIX.fullmatch(ref.prefix)
    problem = None
    if match is None or match.group(1) != ref.name:
        problem = (
            f"its prefix {shown(ref.prefix)} is not a splits prefix of dataset {shown(ref.name)}"
        )
    elif prefix is not None and ref.prefix != prefix:
        problem = f"its prefix {shown(ref.prefix)} is not the prefix it was read from ({prefix})"
    elif ref.shards:
        for split in SPLITS:
            manifest = ref.shards.get(split)
            if manifest is None:
                problem = f"it has no {split} shards"
                break
            problem = manifest.problem(ref.prefix, split)
            if problem is None and manifest.image_size != ref.image_size:
                problem = f"its {split} shards hold {manifest.image_size}px images, not {ref.image_size}px"
            if problem:
                break
    else:
        for split in SPLITS:
            info = ref.files.get(split)
            if not isinstance(info, dict) or info.get("key") != layout.split_file_key(
                ref.prefix, split
            ):
                problem = (
                    f"its {split} file key {shown(info.get('key') if isinstance(info, dict) else None)} is not "
                    f"{layout.split_file_key(ref.prefix, split)}"
                )
                break
            if not is_sha256(info.get("sha256")):
                problem = f"its {split} file has no valid SHA-256"
                break
    if problem:
        where = (
            layout.prepared_key(prefix or ref.prefix)
            if prefix or match
            else "the dataset reference"
        )
        raise DataError(
            f"prepared dataset {where} is malformed: {problem}. Delete that prepared.json so the splits are "
            "rebuilt, and check who can write to the bucket"
        )


def _read_prepared(store: ArtifactStore, prefix: str) -> DatasetRef:
    try:
        ref = DatasetRef.model_validate(store.get_json(layout.prepared_key(prefix)))
    except (ValidationError, ValueError) as exc:
        raise DataError(
            f"{store.uri(layout.prepared_key(prefix))} is not a valid prepared.json ({short(exc)}); delete it so "
            "the splits are rebuilt"
        ) from None
    check_ref(ref, prefix=prefix)
    return ref


def prepare_dataset(
    data: str,
    spec: SplitSpec,
    store: ArtifactStore,
    cache_dir: Path,
    *,
    expected_sha256: str | None = None,
    allow_private_urls: bool = False,
) -> DatasetRef:
    """The whole data stage. Reuses prepared splits stored earlier for the same content and settings.

    A source is stored in S3 only after it has decoded as a CIFAR-10 archive of a supported layout.
    `allow_private_urls` (the caller's `Settings.allow_private_urls`) lets a URL source point at
    a loopback, link-local or private address."""
    started = time.perf_counter()
    source = resolve_source(data)
    if source.is_synthetic:
        name, digest, raw = (
            "synthetic",
            hashlib.sha256(
                f"synthetic:{source.synthetic_size}:{spec.seed}:v{FORMAT_VERSION}".encode()
            ).hexdigest(),
            None,
        )
    else:
        raw = fetch_archive(
            source,
            store,
            cache_dir,
            expected_sha256=expected_sha256,
            allow_private_urls=allow_private_urls,
        )
        name, digest = raw.name, raw.sha256
    prefix = layout.splits_prefix(name, digest, split_key(spec))

    ref, problems = _reuse_or_repair(store, prefix, started)
    if ref is not None:
        if raw is not None:
            store_archive(raw, store)  # decoded successfully when it was prepared
        return ref

    decoded = (
        synthetic_data(source.synthetic_size, spec.seed)
        if raw is None
        else decode_archive(raw.path)
    )
    if raw is not None:
        store_archive(raw, store)
    indices = split_indices(decoded, spec)
    splits = make_splits(decoded, indices)
    ref = DatasetRef(
        name=name,
        synthetic=source.is_synthetic,
        source="synthetic"
        if source.is_synthetic
        else redact_url(source.location)
        if source.kind == "url"
        else source.location,
        archive_sha256=None if raw is None else raw.sha256,
        prefix=prefix,
        class_names=list(decoded.class_names),
        sizes={split: int(len(y)) for split, (_, y) in splits.items()},
        shards=_store_shards(splits, prefix, store, cache_dir, frozenset(problems)),
        normalisation=normalisation_stats(splits["train"][0]),
        split_key=split_key(spec),
        split_indices_sha256=indices_sha256(indices),
        test_indices_sha256=indices_sha256(indices, ("test",)),
        repaired=problems,
    )
    _write_prepared(store, ref, spec, decoded.layout)
    return ref.model_copy(update={"seconds": time.perf_counter() - started})


def _store_shards(
    splits: dict[str, tuple[np.ndarray, np.ndarray]],
    prefix: str,
    store: ArtifactStore,
    cache_dir: Path,
    rewrite: frozenset[str] = frozenset(),
) -> dict[str, SplitShards]:
    """Each split as shards under `prefix` (content-addressed; prepared.json comes after)."""
    return {
        split: write_split(x, y, prefix, split, store, cache_dir, rewrite=rewrite)
        for split, (x, y) in splits.items()
    }


def _reuse_or_repair(
    store: ArtifactStore, prefix: str, started: float, facts: dict | None = None
) -> tuple[DatasetRef | None, dict[str, str]]:
    """The prepared reference stored under `prefix` when it is whole, else (None, what is
    wrong: missing or damaged files by key, which the caller rebuilds from the source)."""
    if not store.exists(layout.prepared_key(prefix)):
        return None, {}
    ref = _read_prepared(store, prefix)
    problems = shard_problems(store, prefix, ref.shards) if ref.shards else {}
    if problems:
        return None, problems
    update = {**(facts or {}), "reused": True, "seconds": time.perf_counter() - started}
    return ref.model_copy(update=update), {}


def _write_prepared(store: ArtifactStore, ref: DatasetRef, spec: SplitSpec, kind: str) -> None:
    """`prepared.json`, last: a splits prefix without it is rebuilt."""
    store.put_json(
        {
            **ref.model_dump(exclude={"repaired"}),
            "split": spec.model_dump(),
            "layout": kind,
            "format_version": FORMAT_VERSION,
        },
        layout.prepared_key(ref.prefix),
        overwrite=True,
    )
    if ref.repaired:
        store.delete(layout.damaged_key(ref.prefix))


def folder_split_spec(spec: SplitSpec) -> SplitSpec:
    """The split of a folder source: `hash` (the default `seed` protocol is read as it)."""
    if spec.protocol == "hash":
        return spec
    if spec.protocol == "seed":
        return SplitSpec(protocol="hash", seed=spec.seed)
    raise DataError(
        f"a folder of images is split by hash (its split must stay put as it grows); split protocol "
        f"{spec.protocol!r} is for the CIFAR-10 archive: use --split hash (the default for folders)"
    )


def _sequence_sha256(shas: list[str]) -> str:
    return hashlib.sha256("\n".join(shas).encode()).hexdigest()


def prepare_version(
    version: DatasetVersion, store: ArtifactStore, cache_dir: Path, *, started: float
) -> DatasetRef:
    """A version's splits, stored under its id (reused when they are there already)."""
    s = version.summary
    spec = s.split
    prefix = layout.splits_prefix(s.name, s.version_id, split_key(spec))
    facts = {
        "version_id": s.version_id,
        "skipped": s.skipped,
        "duplicates": s.duplicates,
        "leaked": s.leaked,
        "resize": s.resize,
        "image_size": s.image_size,
    }
    ref, problems = _reuse_or_repair(store, prefix, started, facts)
    if ref is not None:
        return ref
    cache_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="version-") as scratch:
        splits, order = version_arrays(version, store, Path(scratch))
        ref = DatasetRef(
            name=s.name,
            synthetic=False,
            source=s.source,
            archive_sha256=None,
            prefix=prefix,
            class_names=list(s.class_names),
            sizes={split: int(len(y)) for split, (_, y) in splits.items()},
            shards=_store_shards(splits, prefix, store, cache_dir, frozenset(problems)),
            normalisation=normalisation_stats(splits["train"][0]),
            split_key=split_key(spec),
            split_indices_sha256=_sequence_sha256([f"{k}:{h}" for k in SPLITS for h in order[k]]),
            test_indices_sha256=_sequence_sha256(order["test"]),
            repaired=problems,
            **facts,
        )
        del splits  # the mapped files go with the folder
    _write_prepared(store, ref, spec, s.layout)
    return ref.model_copy(update={"seconds": time.perf_counter() - started})


def folder_name(location: str) -> str:
    """A dataset name for a folder source, as the S3 layout spells names."""
    stem = location.removeprefix("s3://").rstrip("/").replace("/", "-")
    return ("folder-" + name_characters(stem).strip("-_."))[:100]


def _check_version_size(version: DatasetVersion, policy: FolderPolicy) -> None:
    """A stored version keeps the size it was snapshotted at. `folder.image_size` left at its
    default reads it at that size; set to another, it asks for images the version does not
    hold, and is refused (rather than trained at a size the run did not ask for)."""
    own = version.summary.image_size
    if policy.image_size not in (own, IMAGE_SIZE):
        raise DataError(
            f"dataset version {version.summary.version_id[:12]} holds {own}x{own} images, and "
            f"folder.image_size asks for {policy.image_size}: a stored version keeps the size it "
            f"was taken at. Snapshot the folder at {policy.image_size} (data=<the folder>, "
            f"folder.image_size={policy.image_size}), or leave folder.image_size at its default "
            f"to train on this version at {own}"
        )


def prepare_folder(
    data: str,
    spec: SplitSpec,
    policy: FolderPolicy,
    store: ArtifactStore,
    cache_dir: Path,
) -> tuple[DatasetRef, Snapshot | None]:
    """The data stage of a folder source (or of a stored version, ``version:<id>``): snapshot,
    check the policy, then the version's splits."""
    started = time.perf_counter()
    if data.startswith("version:"):
        version, snap = read_version(store, data.removeprefix("version:")), None
        _check_version_size(version, policy)
    else:
        folder = folder_source(data)
        if folder is None:
            raise DataError(f"{shown(data)} is not a folder of images")
        snap = snapshot(
            folder, store, folder_split_spec(spec), policy, name=folder_name(folder.location)
        )
        version = snap.version
    check_policy(version, policy)
    return prepare_version(version, store, cache_dir, started=started), snap


def load_split(
    ref: DatasetRef, split: str, store: ArtifactStore, cache_dir: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float32 images and int labels of one split, whole in memory (local cache,
    else S3)."""
    _checked(ref, split)
    if ref.shards:
        y = load_labels(store, ref.prefix, ref.shards[split])
        return normalise(split_images_uint8(ref, split, store, cache_dir, y)), y
    info = ref.files[split]
    path = inside(cache_dir, info["key"], what="prepared split path")
    if not path.exists() or sha256_file(path) != info["sha256"]:
        cache_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            store.download(info["key"], Path(tmp) / "split.npz")
            sha = sha256_file(Path(tmp) / "split.npz")
            if sha != info["sha256"]:
                raise DataError(
                    f"prepared split {store.uri(info['key'])} is corrupt: expected SHA-256 {info['sha256']}, got {sha}"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / "split.npz").replace(path)
    with np.load(path, allow_pickle=False) as npz:
        x, y = npz["x"], npz["y"]
    size = ref.image_size
    if (
        x.dtype != np.uint8
        or x.ndim != 4
        or x.shape[1:] != image_shape(size)
        or y.ndim != 1
        or len(y) != len(x)
        or y.dtype.kind not in "iu"
    ):
        raise DataError(
            f"prepared split {info['key']} holds {describe(x)} and {describe(y)}, not uint8 "
            f"{size}x{size}x3 images and their labels; delete its prepared.json so the splits are "
            "rebuilt"
        )
    return normalise(x), y.astype(np.int64)


def _checked(ref: DatasetRef, split: str) -> None:
    """A split that exists, of a reference that is sound (what every reader checks first)."""
    if split not in SPLITS:
        raise DataError(f"unknown split {shown(split)}; choose one of {', '.join(SPLITS)}")
    check_ref(ref)


def _none(ref: DatasetRef) -> np.ndarray:
    return np.zeros((0, *image_shape(ref.image_size)), np.uint8)


def open_split(
    ref: DatasetRef,
    split: str,
    store: ArtifactStore,
    cache_dir: Path,
    *,
    cache_gib: float | None = None,
    labels: np.ndarray | None = None,
) -> tuple[ImageIndex | None, np.ndarray]:
    """A sharded split's images, read by index from its shards in the local cache (None where
    the split is empty): all of them pinned there when the split fits in the cache, else a
    window of them at a time (`WindowedShardReader`); and its labels (`labels`: read already). `cache_gib`: the local
    cache's limit (None: the worker's `Settings.shard_cache_gib`)."""
    _checked(ref, split)
    if not ref.shards:
        raise DataError(f"dataset {ref.prefix} was prepared before shards: read it with load_split")
    if cache_gib is None:
        cache_gib = Settings().shard_cache_gib
    manifest = ref.shards[split]
    y = load_labels(store, ref.prefix, manifest) if labels is None else labels
    if manifest.images == 0:
        return None, y
    limit = int(cache_gib * 2**30)
    if manifest.bytes > limit:  # more than the cache holds: a window of shards at a time
        return WindowedShardReader(store, ref.prefix, manifest, cache_dir, limit_bytes=limit), y
    return ShardReader(
        local_copy(store, ref.prefix, split, manifest, cache_dir, limit_bytes=limit), manifest
    ), y


def prepared_splits(store: ArtifactStore, name: str, digest: str) -> list[DatasetRef]:
    """Every prepared split stored for a dataset version or archive (one per split setting);
    one that does not read is left out."""
    found = []
    for prefix in store.list_prefixes(layout.dataset_prefix(name, digest) + "splits/"):
        try:
            if store.exists(layout.prepared_key(prefix)):
                found.append(_read_prepared(store, prefix))
        except DataError:
            continue
    return found


def split_labels(ref: DatasetRef, split: str, store: ArtifactStore, cache_dir: Path) -> np.ndarray:
    """A split's labels (for shards, without reading an image)."""
    if not ref.shards:
        return load_split(ref, split, store, cache_dir)[1]
    _checked(ref, split)
    return load_labels(store, ref.prefix, ref.shards[split])


def read_split(
    ref: DatasetRef, split: str, store: ArtifactStore, cache_dir: Path, in_memory_mib: int
) -> tuple[np.ndarray | ImageIndex, np.ndarray]:
    """A split to compute on: whole in memory (float32 in [0, 1]) when its pixels are at most
    `in_memory_mib` (or it was prepared before shards), else a reader of its shards in the
    local cache, scaled batch by batch (`ShardReader[indices]`)."""
    manifest = ref.shards.get(split)
    if manifest is None or manifest.pixel_bytes <= in_memory_mib << 20:
        return load_split(ref, split, store, cache_dir)
    reader, y = open_split(ref, split, store, cache_dir)
    return (reader if reader is not None else np.zeros((0, *manifest.shape), np.float32)), y


def split_images(
    ref: DatasetRef,
    split: str,
    store: ArtifactStore,
    cache_dir: Path,
    labels: np.ndarray | None = None,
) -> np.ndarray | ImageIndex:
    """A split's images as uint8, read as they are asked for: a reader of its shards
    (`ShardReader.pixels`; nothing read until asked), else the floats in [0, 1] `load_split`
    gives (prepared before shards). `labels`: read already."""
    if not ref.shards:
        return load_split(ref, split, store, cache_dir)[0]
    reader, _ = open_split(ref, split, store, cache_dir, labels=labels)
    return reader if reader is not None else _none(ref)


def split_images_uint8(
    ref: DatasetRef, split: str, store: ArtifactStore, cache_dir: Path, labels: np.ndarray
) -> np.ndarray:
    """A split's images whole, as uint8 where it is stored as shards (a quarter of float32's
    memory), else as the floats in [0, 1] `load_split` gives."""
    images = split_images(ref, split, store, cache_dir, labels)
    if not isinstance(images, ImageIndex):
        return images
    try:
        return images.all_pixels()
    finally:
        images.close()  # read whole: its shards evictable again
