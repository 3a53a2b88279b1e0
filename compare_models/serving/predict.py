"""Batch prediction with a track's champion: every image of a folder (a local directory or an
``s3://bucket/prefix/``) or of a tar archive (local or ``s3://``; gzip, bzip2 or xz) scored by
the champion's served ONNX export with onnxruntime, in batches, so that memory stays bounded
whatever the number of images.

* The images are read and decoded as training reads them (`compare_models.data.folders`,
  `compare_models.data.images`: the size cap, the allowlisted formats, the pixel-count check,
  the same resampling) at the export's input size. A file that fails is skipped and listed with
  its reason; the others are scored.
* A flat folder needs no labels. An image whose parent folder is one of the champion's classes
  keeps that class as its label, and the summary gives the accuracy on those images.
* One row per scored file goes to S3 as Parquet and as CSV (`layout.predictions_prefix`): its
  key, SHA-256, label, predicted class, each class's probability, and the champion's run and
  export version. `summary.json` is written last, so a result without it is partial.
* The source's version is the digest of its listing (each file's key, size and change stamp),
  or of an archive's bytes: scoring the same source with the same served version again returns
  the stored result.
* An archive is read in one sequential pass (`compare_models.data.tar_stream.
  iter_image_members`) and refused as a whole when a member is a link or a device or has an
  unsafe path, as training refuses one.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

import numpy as np
from pydantic import BaseModel, Field, ValidationError

from compare_models.config import FolderPolicy
from compare_models.data.errors import DataError
from compare_models.data.files import sha256_file
from compare_models.data.folders import (
    FolderEntry,
    FolderReader,
    file_problem,
    folder_source,
    list_folder,
)
from compare_models.data.images import to_input
from compare_models.data.safety import reason_of, shown
from compare_models.data.sources import MAX_ARCHIVE_BYTES
from compare_models.data.tar_stream import iter_image_members
from compare_models.runs.champion_record import read as read_champion
from compare_models.serving.publish import stored_export
from compare_models.serving.records import ExportFailed
from compare_models.storage import layout
from compare_models.storage.store import ArtifactStore, parse_s3_uri

#: Images scored per onnxruntime call (and decoded per step): what bounds the memory.
BATCH = 256

#: Files read at once from the source.
READERS = 8

#: The most bytes an archive source may decompress to (its files are read once, in order).
MAX_ARCHIVE_STREAM_BYTES = 64 << 30

#: Skipped files listed in the summary (all of them are counted).
MAX_LISTED_SKIPS = 1000


class Skipped(BaseModel):
    key: str
    reason: str


class PredictSummary(BaseModel):
    """What a batch prediction did: its source and champion, counts, and where its rows are."""

    source: str
    source_digest: str
    track: str
    model: str
    champion_run_id: str
    export_version: int
    class_names: list[str]
    images: int = Field(ge=0, description="files scored")
    skipped: int = Field(ge=0)
    skipped_files: list[Skipped] = Field(description=f"at most {MAX_LISTED_SKIPS}")
    per_class: dict[str, int] = Field(description="scored files per predicted class")
    labelled: int = Field(ge=0, description="scored files whose folder named a class")
    accuracy: float | None = Field(description="on the labelled files (None: none)")
    parquet: str
    csv: str
    reused: bool = False
    seconds: float = Field(ge=0)
    predicted_at: str


class PredictError(RuntimeError):
    """The source or the champion cannot be scored; the message says why and what to do."""


def source_digest(location: str, entries: list[FolderEntry]) -> str:
    """The source's version: its location and every file's key, size and change stamp."""
    digest = hashlib.sha256(location.encode())
    for entry in entries:
        digest.update(f"\n{entry.key}\t{entry.size}\t{entry.stamp}".encode())
    return digest.hexdigest()


def label_of(key: str, class_names: list[str]) -> str | None:
    """The class an image's parent folder names, if it is one of the champion's classes."""
    parent = _folder_name(key.rpartition("/")[0])
    return parent if parent in class_names else None


@functools.lru_cache(maxsize=4096)
def _folder_name(folder: str) -> str:
    """The last part of a key's folder, as PurePosixPath reads it (a source has few folders)."""
    return PurePosixPath(folder).name


Payload = tuple[str, "bytes | str"]  # a file's key and its bytes, or why it cannot be read


def _folder_batches(
    reader: FolderReader, entries: list[FolderEntry], pool: ThreadPoolExecutor
) -> Iterator[list[Payload]]:
    """The folder's files, `BATCH` at a time, read in `pool` (waiting on S3 or the disk)."""

    def read(entry: FolderEntry) -> Payload:
        try:
            return entry.key, reader.read(entry.key)
        except (DataError, OSError) as exc:
            return entry.key, f"it could not be read ({str(exc)[:200]})"

    for start in range(0, len(entries), BATCH):
        yield list(pool.map(read, entries[start : start + BATCH]))


def _archive_batches(path: Path, policy: FolderPolicy) -> Iterator[list[Payload]]:
    """The archive's members, `BATCH` at a time, in one sequential pass."""
    members = iter_image_members(
        path,
        max_members=policy.max_files,
        max_stream_bytes=MAX_ARCHIVE_STREAM_BYTES,
        # the same checks as a folder's files (a member is a regular file: no stamp to read)
        problem=lambda name, size: file_problem(
            FolderEntry(name, size, ""), policy.max_image_bytes
        ),
    )
    while batch := list(itertools.islice(members, BATCH)):
        yield batch


@dataclass(frozen=True)
class _Decoded:
    """A batch ready to score: the decoded files' keys, SHA-256s and stacked pixels, and the
    files that were skipped."""

    keys: list[str]
    shas: list[str]
    images: np.ndarray
    skipped: list[Skipped]


def _decoded(batch: list[Payload] | None, size: tuple[int, int]) -> _Decoded | None:
    """`batch` decoded one file after the other and stacked (here, not in the scoring thread,
    so that the scoring thread seldom waits for the GIL)."""
    if batch is None:
        return None
    keys, shas, pixels, skipped = [], [], [], []
    for key, payload in batch:
        if isinstance(payload, str):
            skipped.append(Skipped(key=key, reason=payload))
            continue
        sha = hashlib.sha256(payload).hexdigest()
        try:
            pixels.append(to_input(payload, size)[0])
        except DataError as exc:
            skipped.append(Skipped(key=key, reason=str(exc)))
            continue
        keys.append(key)
        shas.append(sha)
    images = np.stack(pixels) if pixels else np.zeros((0, *size, 3), np.uint8)
    return _Decoded(keys=keys, shas=shas, images=images, skipped=skipped)


def champion_export(store: ArtifactStore, track: str, model: str):
    """The served export of `track`'s champion `model` (its manifest), from the champion record."""
    try:
        record, _ = read_champion(store, track, model)
    except ValidationError as exc:
        raise PredictError(
            f"the champion record {layout.champion_key(track, model)} cannot be read "
            f"({reason_of(exc)}); a record this version cannot read is left as it is: name "
            f"a champion again with `compare-models promote RUN_ID --model {model} --track {track}`"
        ) from None
    current = record.current if record else None
    if current is None or current.export is None:
        raise PredictError(
            f"track {track!r} has no served {model} champion: promote one, or export the champion "
            f"with `compare-models export RUN_ID --model {model}`"
        )
    version = current.export.version
    try:
        result = stored_export(store, layout.export_version_prefix(track, model, version))
    except ExportFailed as exc:
        raise PredictError(str(exc)) from None
    if result is None or "model.onnx" not in result.uris:
        raise PredictError(
            f"version {version} of {track}'s {model} has no complete ONNX export; publish the "
            f"champion again with `compare-models export {current.run_id} --model {model}`"
        )
    return result


def _archive(store: ArtifactStore, source: str, folder: Path) -> tuple[Path, str]:
    """A local archive file, or an s3:// archive downloaded into `folder`; and its location."""
    if source.startswith("s3://"):
        bucket, key = parse_s3_uri(source)
        if not key or key.endswith("/"):
            raise PredictError(f"{shown(source)} names no archive object")
        sized = [
            size for listed, size, _ in store.in_bucket(bucket).list_entries(key) if listed == key
        ]
        if not sized:
            raise PredictError(f"{shown(source)} does not exist")
        if sized[0] > MAX_ARCHIVE_BYTES:
            raise PredictError(
                f"{shown(source)} is {sized[0]:,} bytes, more than an archive may be "
                f"({MAX_ARCHIVE_BYTES:,}); unpack it into an S3 prefix and score the prefix"
            )
        return store.in_bucket(bucket).download(key, folder / "source-archive"), source
    path = Path(source).expanduser()
    if not path.is_file():
        raise PredictError(
            f"{shown(source)} is neither a folder nor an archive: give a local directory, an "
            "s3://bucket/prefix/ (ending in '/'), or a .tar(.gz) archive, local or s3://"
        )
    return path, str(path.resolve())


def predict(
    store: ArtifactStore,
    *,
    track: str,
    model: str,
    source: str,
    policy: FolderPolicy | None = None,
    cache_dir: Path | None = None,
) -> PredictSummary:
    """Scores every image of `source` with `track`'s champion `model` (see the module docstring)."""
    import onnxruntime

    started = time.perf_counter()
    policy = policy or FolderPolicy()
    export = champion_export(store, track, model)
    names, size = export.class_names, (export.input.height, export.input.width)
    skipped: list[Skipped] = []
    counts: Counter[str] = Counter()
    labelled = right = 0
    with (
        tempfile.TemporaryDirectory(dir=cache_dir) as tmp,
        ThreadPoolExecutor(READERS) as readers,
    ):
        found = folder_source(source.strip())
        if found is not None:
            entries = list_folder(found, store, policy.max_files)
            location, digest = found.location, source_digest(found.location, entries)
            scorable = []
            for entry in entries:
                problem = file_problem(entry, policy.max_image_bytes)
                if problem:
                    skipped.append(Skipped(key=entry.key, reason=problem))
                else:
                    scorable.append(entry)
            reader = FolderReader(found, store, policy.max_image_bytes)
            batches = _folder_batches(reader, scorable, readers)
        else:
            archive, location = _archive(store, source.strip(), Path(tmp))
            digest = hashlib.sha256(b"archive\n" + sha256_file(archive).encode()).hexdigest()
            batches = _archive_batches(archive, policy)
        prefix = layout.predictions_prefix(track, model, export.version, digest)
        done = store.get_bytes_if_exists(prefix + layout.PREDICTIONS_SUMMARY, max_bytes=8 << 20)
        if done is not None:
            return PredictSummary.model_validate_json(done).model_copy(update={"reused": True})
        onnx_path = store.download(export.prefix + "model.onnx", Path(tmp) / "model.onnx")
        session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        parquet_path, csv_path = Path(tmp) / "predictions.parquet", Path(tmp) / "predictions.csv"
        # the next batch is read and decoded while onnxruntime scores this one (it releases
        # the GIL): at most two batches are in memory
        with _Rows(parquet_path, csv_path, names) as rows, ThreadPoolExecutor(1) as ahead:
            pending = ahead.submit(lambda: _decoded(next(batches, None), size))
            while (prepared := pending.result()) is not None:
                pending = ahead.submit(lambda: _decoded(next(batches, None), size))
                skipped.extend(prepared.skipped)
                if not prepared.keys:
                    continue
                probs = session.run(["probabilities"], {"image": prepared.images})[0]
                predicted = probs.argmax(axis=1)
                labels = [label_of(key, names) for key in prepared.keys]
                for label, index in zip(labels, predicted, strict=True):
                    counts[names[index]] += 1
                    if label is not None:
                        labelled += 1
                        right += int(names[index] == label)
                rows.write(
                    keys=prepared.keys,
                    shas=prepared.shas,
                    labels=labels,
                    probs=probs,
                    run_id=export.run_id,
                    version=export.version,
                )
        store.upload(parquet_path, prefix + "predictions.parquet")
        store.upload(csv_path, prefix + "predictions.csv")
    summary = PredictSummary(
        source=location,
        source_digest=digest,
        track=track,
        model=model,
        champion_run_id=export.run_id,
        export_version=export.version,
        class_names=names,
        images=sum(counts.values()),
        skipped=len(skipped),
        skipped_files=skipped[:MAX_LISTED_SKIPS],
        per_class={name: counts.get(name, 0) for name in names},
        labelled=labelled,
        accuracy=right / labelled if labelled else None,
        parquet=store.uri(prefix + "predictions.parquet"),
        csv=store.uri(prefix + "predictions.csv"),
        seconds=time.perf_counter() - started,
        predicted_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    store.put_json(summary.model_dump(mode="json"), prefix + layout.PREDICTIONS_SUMMARY)
    return summary


class _Rows:
    """The rows, appended batch by batch to a Parquet file and a CSV file (one Arrow table a
    batch, written by pyarrow to both)."""

    def __init__(self, parquet_path: Path, csv_path: Path, class_names: list[str]):
        import pyarrow as pa

        self.names = class_names
        self.schema = pa.schema(
            [("key", pa.string()), ("sha256", pa.string()), ("label", pa.string()),
             ("predicted", pa.string()), *[(f"p_{n}", pa.float32()) for n in class_names],
             ("champion_run_id", pa.string()), ("export_version", pa.int32())]
        )  # fmt: skip
        self.parquet_path, self.csv_path = parquet_path, csv_path

    def __enter__(self) -> _Rows:
        import pyarrow.csv as pa_csv
        import pyarrow.parquet as pq

        self.parquet = pq.ParquetWriter(str(self.parquet_path), self.schema)
        self.csv = pa_csv.CSVWriter(
            str(self.csv_path),
            self.schema,
            write_options=pa_csv.WriteOptions(quoting_style="needed"),
        )
        return self

    def write(self, *, keys, shas, labels, probs, run_id: str, version: int) -> None:
        import pyarrow as pa

        predicted = [self.names[i] for i in probs.argmax(axis=1)]
        data = {"key": keys, "sha256": shas, "label": labels, "predicted": predicted,
                **{f"p_{n}": probs[:, i].astype(np.float32) for i, n in enumerate(self.names)},
                "champion_run_id": [run_id] * len(keys), "export_version": [version] * len(keys)}  # fmt: skip
        table = pa.table(data, schema=self.schema)
        self.parquet.write_table(table)
        self.csv.write_table(table)

    def __exit__(self, *exc) -> None:
        self.parquet.close()
        self.csv.close()


def table_rows(summary: PredictSummary) -> list[dict[str, object]]:
    """The counts per predicted class, for a Prefect table artifact."""
    total = max(1, summary.images)
    return [
        {"class": name, "images": count, "share": f"{100 * count / total:.1f}%"}
        for name, count in summary.per_class.items()
    ]


def describe(summary: PredictSummary) -> str:
    accuracy = (
        f"; accuracy {summary.accuracy:.4f} on the {summary.labelled:,} labelled by their folder"
        if summary.accuracy is not None
        else ""
    )
    return (
        f"{summary.images:,} images scored by {summary.model} (run {summary.champion_run_id}, "
        f"served version {summary.export_version}){accuracy}; {summary.skipped:,} skipped"
        + (" (reused: this source and version were scored before)" if summary.reused else "")
        + f"; rows: {summary.parquet}"
    )
