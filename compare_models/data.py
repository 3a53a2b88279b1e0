"""Data stage: fetch -> verify -> decode -> normalise -> split, cached in S3.

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

Prepared splits keep pixels as uint8 (4x smaller than float32); normalisation (scale to
[0, 1], as the report did) is applied by `load_split`, and its statistics are recorded in
``prepared.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pickle
import tarfile
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
from pydantic import BaseModel
from sklearn.model_selection import train_test_split

from compare_models.config import CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_URL, IMAGE_SHAPE, NUM_CLASSES, SplitSpec
from compare_models import layout
from compare_models.files import DownloadError, download_url, file_digests, sha256_file
from compare_models.store import ArtifactStore, StoreError, parse_s3_uri

FORMAT_VERSION = 1  # bump when the prepared layout or split algorithm changes
SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


class DataError(ValueError):
    """Bad data input; the message names the problem and the fix."""


# ── sources ────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Source:
    kind: str  # "url" | "path" | "s3" | "synthetic"
    location: str
    synthetic_size: int = 0

    @property
    def is_synthetic(self) -> bool:
        return self.kind == "synthetic"


def resolve_source(data: str) -> Source:
    data = data.strip()
    if data in ("cifar10", "official"):
        return Source("url", CIFAR10_URL)
    if data == "synthetic" or data.startswith("synthetic:"):
        size = data.partition(":")[2] or "2000"
        if not size.isdigit() or int(size) < NUM_CLASSES * 2:
            raise DataError(f"synthetic size {size!r} must be an integer of at least {NUM_CLASSES * 2} (e.g. synthetic:2000)")
        return Source("synthetic", "synthetic", int(size))
    if data.startswith(("http://", "https://")):
        return Source("url", data)
    if data.startswith("s3://"):
        parse_s3_uri(data)
        return Source("s3", data)
    path = Path(data).expanduser()
    if not path.exists():
        raise DataError(
            f"data source {data!r} is neither 'cifar10', 'synthetic[:N]', a URL, an s3:// URI nor an existing file"
        )
    return Source("path", str(path.resolve()))


def _download(url: str, dest: Path) -> None:
    try:
        download_url(url, dest)
    except DownloadError as exc:
        raise DataError(
            f"could not download {url} ({exc.reason}). This machine may have no internet "
            "access: download the archive elsewhere and pass it with --data <path or s3:// URI> "
            "(make demo DATA=<path or s3:// URI>)."
        ) from None


def _expected_sha256_beside(path: Path) -> str | None:
    """A SHA256SUMS file next to a local archive, if it lists it."""
    sums = path.parent / "SHA256SUMS"
    if not sums.is_file():
        return None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == path.name:
            return parts[0].lower()
    return None


def verify_checksums(path: Path, sha256: str, md5: str, *, expected_sha256: str | None, expected_md5: str | None) -> None:
    for algo, expected, actual in (("SHA-256", expected_sha256, sha256), ("MD5", expected_md5, md5)):
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


def fetch_archive(source: Source, store: ArtifactStore, cache_dir: Path, *, expected_sha256: str | None) -> FetchedArchive:
    """Get the archive locally, verify it, and make sure a copy sits in S3 (once)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    index_key = layout.source_index_key(source.location)
    expected_md5 = CIFAR10_MD5 if source.location == CIFAR10_URL else None

    if source.kind == "url" and store.exists(index_key):
        entry = store.get_json(index_key)  # cached earlier: no internet needed
        local = cache_dir / "raw" / entry["sha256"] / entry["filename"]
        if not local.exists():
            store.download(entry["raw_key"], local)
    elif source.kind == "url":
        local = cache_dir / "downloads" / PurePosixPath(source.location).name
        local.parent.mkdir(parents=True, exist_ok=True)
        _download(source.location, local)
    elif source.kind == "s3":
        _, key = parse_s3_uri(source.location)
        local = cache_dir / "downloads" / PurePosixPath(key).name
        try:
            store.fetch_uri(source.location, local)
        except StoreError as exc:
            raise DataError(str(exc)) from None
    else:
        local = Path(source.location)
        expected_sha256 = expected_sha256 or _expected_sha256_beside(local)

    digests = file_digests(local, "sha256", "md5")
    sha256, md5 = digests["sha256"], digests["md5"]
    verify_checksums(local, sha256, md5, expected_sha256=expected_sha256, expected_md5=expected_md5)
    filename = local.name
    name = _dataset_name(filename)
    raw_key = layout.raw_archive_key(name, sha256, filename)
    if not store.exists(raw_key):
        store.upload(local, raw_key, overwrite=True)  # content-addressed: same bytes, same key
    if source.kind in ("url", "s3") and not store.exists(index_key):
        store.put_json({"source": source.location, "sha256": sha256, "filename": filename, "raw_key": raw_key}, index_key, overwrite=True)
    return FetchedArchive(local, name, sha256, raw_key)


def _dataset_name(filename: str) -> str:
    stem = filename
    for suffix in (".tar.gz", ".tgz", ".tar"):
        stem = stem.removesuffix(suffix)
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in stem.lower()) or "dataset"


# ── decoding ───────────────────────────────────────────────────────────────


@dataclass
class Decoded:
    """The archive's own train / test sets, uint8 NHWC and int64 labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    layout: str


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles CIFAR batches only: numpy arrays, lists, dicts. No arbitrary code."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):  # noqa: D401
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise DataError(f"refusing to unpickle {module}.{name}: CIFAR-10 batches hold only arrays")


def _decode_python_batches(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> Decoded:
    def load(name: str) -> dict:
        member = next((m for path, m in members.items() if PurePosixPath(path).name == name), None)
        if member is None:
            raise DataError(f"CIFAR-10 python archive is missing {name}; the archive is incomplete")
        try:
            return _ArrayUnpickler(tar.extractfile(member), encoding="bytes").load()
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"CIFAR-10 batch {name} is corrupt ({exc}); download the archive again") from None

    def arrays(batches: list[dict], names: list[str]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for batch, name in zip(batches, names):
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            if data.ndim != 2 or data.shape[1] != int(np.prod(IMAGE_SHAPE)):
                raise DataError(f"{name}: images have {data.shape[1:]} values each, expected 32x32x3 = 3072")
            xs.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(np.asarray(batch[b"labels"], dtype=np.int64))
        return np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys)

    meta = load("batches.meta")
    class_names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(b"label_names", CIFAR10_CLASSES))
    train_names = [f"data_batch_{i}" for i in range(1, 6)]
    x_train, y_train = arrays([load(n) for n in train_names], train_names)
    x_test, y_test = arrays([load("test_batch")], ["test_batch"])
    return Decoded(x_train, y_train, x_test, y_test, class_names, "cifar10-python")


def _decode_image(item: tuple[str, bytes]) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    name, payload = item
    try:
        with Image.open(io.BytesIO(payload)) as image:
            image.load()
            if image.size != IMAGE_SHAPE[:2]:
                raise DataError(f"image {name} is {image.size[0]}x{image.size[1]}; expected 32x32")
            if image.mode != "RGB":
                raise DataError(f"image {name} has mode {image.mode}; expected RGB (3 channels)")
            return np.asarray(image, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(f"image {name} is corrupt or not an image ({exc}); replace or remove it") from None


def _decode_many(items: list[tuple[str, bytes]]) -> list[np.ndarray]:
    return [_decode_image(item) for item in items]


def _decode_image_folders(tar: tarfile.TarFile, members: dict[str, tarfile.TarInfo]) -> Decoded:
    found: dict[str, list[tuple[str, str]]] = {"train": [], "test": []}  # split -> [(class, path)]
    for path in members:
        parts = PurePosixPath(path).parts
        if len(parts) >= 3 and parts[-3] in found and path.lower().endswith(IMAGE_SUFFIXES):
            found[parts[-3]].append((parts[-2], path))
    if not found["train"] or not found["test"]:
        raise DataError(
            "unknown archive layout: expected the CIFAR-10 python tarball (cifar-10-batches-py/...) or class-named "
            "image folders <root>/train/<class>/<image> and <root>/test/<class>/<image>"
        )
    classes = sorted({c for split in found.values() for c, _ in split})
    if len(classes) != NUM_CLASSES:
        raise DataError(f"found {len(classes)} class folders {classes}; expected {NUM_CLASSES}")
    class_names = CIFAR10_CLASSES if set(classes) == set(CIFAR10_CLASSES) else tuple(classes)
    index = {name: i for i, name in enumerate(class_names)}

    def decode(split: str) -> tuple[np.ndarray, np.ndarray]:
        entries = sorted(found[split], key=lambda e: e[1])
        items = [(p, tar.extractfile(members[p]).read()) for _, p in entries]
        workers = min(os.cpu_count() or 1, 8)
        if workers > 1 and len(items) > 4000:
            chunks = [items[i::workers] for i in range(workers)]
            with ProcessPoolExecutor(workers) as pool:
                parts = list(pool.map(_decode_many, chunks))
            images: list[np.ndarray] = [None] * len(items)  # type: ignore[list-item]
            for w, part in enumerate(parts):
                images[w::workers] = part
        else:
            images = _decode_many(items)
        return np.stack(images), np.array([index[c] for c, _ in entries], dtype=np.int64)

    x_train, y_train = decode("train")
    x_test, y_test = decode("test")
    return Decoded(x_train, y_train, x_test, y_test, class_names, "image-folders")


def decode_archive(path: Path) -> Decoded:
    """Decode either supported archive layout, and validate what came out."""
    try:
        tar = tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"{path.name} is not a readable .tar.gz archive ({exc}); check the file or download it again") from None
    try:
        with tar:
            members = {m.name: m for m in tar.getmembers() if m.isfile()}
            if any(PurePosixPath(p).name == "data_batch_1" for p in members):
                decoded = _decode_python_batches(tar, members)
            else:
                decoded = _decode_image_folders(tar, members)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{path.name} is a corrupt archive ({exc}); download it again") from None
    validate_arrays(decoded)
    return decoded


def validate_arrays(d: Decoded) -> None:
    if len(d.class_names) != NUM_CLASSES:
        raise DataError(f"the data has {len(d.class_names)} classes; expected {NUM_CLASSES}")
    for split, x, y in (("train", d.x_train, d.y_train), ("test", d.x_test, d.y_test)):
        if x.ndim != 4 or x.shape[1:] != IMAGE_SHAPE:
            raise DataError(f"{split} images have shape {x.shape[1:]}; expected {IMAGE_SHAPE}")
        if len(x) != len(y):
            raise DataError(f"{split} has {len(x)} images but {len(y)} labels")
        if len(y) and (y.min() < 0 or y.max() >= NUM_CLASSES):
            bad = y[(y < 0) | (y >= NUM_CLASSES)]
            raise DataError(f"{split} labels out of range: found {sorted(set(bad.tolist()))[:5]}; expected 0..{NUM_CLASSES - 1}")


def synthetic_data(n_train: int, seed: int = 0) -> Decoded:
    """Learnable synthetic images: each class a colour/pattern, plus noise. Not CIFAR-10."""
    rng = np.random.default_rng(seed)
    n_test = max(n_train // 5, NUM_CLASSES * 2)
    prototypes = rng.uniform(30, 225, size=(NUM_CLASSES, 4, 4, 3))
    prototypes = prototypes.repeat(8, axis=1).repeat(8, axis=2)  # blocky 32x32 class patterns

    def make(n: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.arange(n) % NUM_CLASSES
        rng.shuffle(y)
        x = prototypes[y] + rng.normal(0, 40, size=(n, *IMAGE_SHAPE))
        return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)

    x_train, y_train = make(n_train)
    x_test, y_test = make(n_test)
    names = tuple(f"synthetic-{c}" for c in range(NUM_CLASSES))
    return Decoded(x_train, y_train, x_test, y_test, names, "synthetic")


# ── splitting and normalisation ────────────────────────────────────────────


def _subset(y: np.ndarray, a: int, b: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of two disjoint, stratified (where possible) subsets of sizes a and b."""
    idx = np.arange(len(y))
    if b == 0:
        chosen, _ = (idx, None) if a == len(y) else train_test_split(idx, train_size=a, stratify=y, random_state=seed)
        return np.sort(chosen), np.array([], dtype=np.int64)
    stratify = y if min(a, b) >= NUM_CLASSES else None
    first, second = train_test_split(idx, train_size=a, test_size=b, stratify=stratify, random_state=seed)
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
        raise DataError(f"split asks for {n_test} test images, but the archive's test set has {len(d.y_test)}; choose a smaller size")
    tr, va = _subset(d.y_train, n_train, n_val, spec.seed)
    te, _ = _subset(d.y_test, n_test, 0, spec.seed)
    return {"train": tr, "val": va, "test": te}


def indices_sha256(indices: dict[str, np.ndarray]) -> str:
    """SHA-256 of the split indices: equal hashes mean the same images in the same splits."""
    digest = hashlib.sha256()
    for split in SPLITS:
        digest.update(np.asarray(indices[split], dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()


def make_splits(d: Decoded, indices: dict[str, np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {
        split: (d.x_test[idx], d.y_test[idx]) if split == "test" else (d.x_train[idx], d.y_train[idx])
        for split, idx in indices.items()
    }


def normalisation_stats(x_train: np.ndarray) -> dict:
    """The normalisation applied (scale to [0, 1]) and the resulting train statistics."""
    scaled = x_train.reshape(-1, 3).astype(np.float64) / 255.0
    return {
        "method": "scale",
        "scale": 1 / 255,
        "offset": 0.0,
        "range": [0.0, 1.0],
        "train_channel_mean": scaled.mean(axis=0).round(6).tolist(),
        "train_channel_std": scaled.std(axis=0).round(6).tolist(),
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
    files: dict[str, dict]  # split -> {"key", "sha256", "bytes"}
    normalisation: dict
    split_key: str | None = None
    split_indices_sha256: str | None = None
    reused: bool = False
    seconds: float = 0.0


def split_key(spec: SplitSpec) -> str:
    payload = json.dumps({"v": FORMAT_VERSION, **spec.model_dump()}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prepare_dataset(data: str, spec: SplitSpec, store: ArtifactStore, cache_dir: Path, *, expected_sha256: str | None = None) -> DatasetRef:
    """The whole data stage. Reuses prepared splits stored earlier for the same content and settings."""
    started = time.perf_counter()
    source = resolve_source(data)
    if source.is_synthetic:
        name, digest, raw = "synthetic", hashlib.sha256(f"synthetic:{source.synthetic_size}:{spec.seed}:v{FORMAT_VERSION}".encode()).hexdigest(), None
    else:
        raw = fetch_archive(source, store, cache_dir, expected_sha256=expected_sha256)
        name, digest = raw.name, raw.sha256
    prefix = layout.splits_prefix(name, digest, split_key(spec))

    if store.exists(layout.prepared_key(prefix)):
        ref = DatasetRef.model_validate(store.get_json(layout.prepared_key(prefix)))
        return ref.model_copy(update={"reused": True, "seconds": time.perf_counter() - started})

    decoded = synthetic_data(source.synthetic_size, spec.seed) if raw is None else decode_archive(raw.path)
    indices = split_indices(decoded, spec)
    splits = make_splits(decoded, indices)
    files: dict[str, dict] = {}
    local_dir = cache_dir / prefix
    local_dir.mkdir(parents=True, exist_ok=True)
    for split, (x, y) in splits.items():
        key = layout.split_file_key(prefix, split)
        path = local_dir / PurePosixPath(key).name
        np.savez(path, x=x, y=y)
        sha = sha256_file(path)
        store.upload(path, key, overwrite=True)  # content-addressed; prepared.json not yet written
        files[split] = {"key": key, "sha256": sha, "bytes": path.stat().st_size}

    ref = DatasetRef(
        name=name,
        synthetic=source.is_synthetic,
        source="synthetic" if source.is_synthetic else source.location,
        archive_sha256=None if raw is None else raw.sha256,
        prefix=prefix,
        class_names=list(decoded.class_names),
        sizes={split: int(len(y)) for split, (_, y) in splits.items()},
        files=files,
        normalisation=normalisation_stats(splits["train"][0]),
        split_key=split_key(spec),
        split_indices_sha256=indices_sha256(indices),
    )
    store.put_json({**ref.model_dump(), "split": spec.model_dump(), "layout": decoded.layout, "format_version": FORMAT_VERSION},
                   layout.prepared_key(prefix), overwrite=True)
    return ref.model_copy(update={"seconds": time.perf_counter() - started})


def load_split(ref: DatasetRef, split: str, store: ArtifactStore, cache_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Normalised float32 images and int labels of one split (local cache, else S3)."""
    info = ref.files[split]
    path = cache_dir / info["key"]
    if not path.exists() or sha256_file(path) != info["sha256"]:
        with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
            store.download(info["key"], Path(tmp) / "split.npz")
            sha = sha256_file(Path(tmp) / "split.npz")
            if sha != info["sha256"]:
                raise DataError(f"prepared split {store.uri(info['key'])} is corrupt: expected SHA-256 {info['sha256']}, got {sha}")
            path.parent.mkdir(parents=True, exist_ok=True)
            (Path(tmp) / "split.npz").replace(path)
    with np.load(path) as npz:
        return normalise(npz["x"]), npz["y"].astype(np.int64)
