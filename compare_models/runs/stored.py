"""The runs a bucket remembers, read back as `RunRecord`s: one run by id, every completed run
(newest first), and a listing of complete and incomplete runs. What is read back is untrusted:
a manifest is size-capped and validated, and an unreadable one is named, never guessed at."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from pydantic import BaseModel, ValidationError

from compare_models.runs.record import RunRecord
from compare_models.storage import layout
from compare_models.storage.errors import StoreError
from compare_models.storage.store import ArtifactStore

#: A manifest is a few hundred KiB at most (metrics, statistics, the object list); far more
#: than that was not written by compare-models.
MAX_MANIFEST_BYTES = 16 << 20

#: manifests read at once (boto3 clients are thread-safe; its default pool holds 10 connections)
_READERS = 8

log = logging.getLogger(__name__)


class RunNotFound(StoreError):
    """A run id names no completed run (no manifest)."""


class UnreadableRecord(StoreError):
    """A manifest that is not a valid run record (damaged, or not written by compare-models)."""


def validation_problems(exc: ValidationError) -> str:
    """The first problems of stored data that did not validate, each as `key.path: message`."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors()[:5]
    )


def parse_record(data: bytes, where: str) -> RunRecord:
    """A stored manifest as a `RunRecord`, or `UnreadableRecord` naming the first problems."""
    try:
        record = RunRecord.model_validate_json(data)
    except ValidationError as exc:
        raise UnreadableRecord(
            f"{where} is not a valid run record: {validation_problems(exc)}"
        ) from None
    if record.status != "complete":
        raise UnreadableRecord(f"{where} is not the manifest of a completed run")
    return record


def read_record(store: ArtifactStore, run_id: str) -> RunRecord:
    """The record of a completed run, or RunNotFound saying what is there instead."""
    key = layout.manifest_key(run_id)
    data = store.get_bytes_if_exists(key, max_bytes=MAX_MANIFEST_BYTES)
    if data is not None:
        return parse_record(data, store.uri(key))
    state = (
        "is incomplete (it has objects but no manifest)"
        if any(True for _ in store.list_keys(layout.run_prefix(run_id)))
        else "does not exist"
    )
    raise RunNotFound(
        f"run {run_id!r} {state} in {store.uri(layout.RUNS)}; `compare-models runs` lists the runs"
    )


def latest_run_id(store: ArtifactStore) -> str | None:
    """The run `runs/latest.json` points at (the last one completed), if any."""
    latest, _ = store.get_json_versioned(layout.LATEST)
    run_id = latest.get("run_id") if isinstance(latest, dict) else None
    return run_id if isinstance(run_id, str) else None


def completed_records(store: ArtifactStore) -> list[RunRecord]:
    """Every completed run's record, newest first (by completion time).

    One GET per run (a run without a manifest is incomplete and left out), several at a time:
    a nightly track's history grows by a run a day, and each report reads it. A manifest that
    cannot be read is left out with a warning, so one damaged run does not stop every later
    report."""
    keys = [layout.manifest_key(layout.run_id_of(p)) for p in store.list_prefixes(layout.RUNS)]

    def read(key: str) -> RunRecord | None:
        data = store.get_bytes_if_exists(key, max_bytes=MAX_MANIFEST_BYTES)
        if data is None:
            return None
        try:
            return parse_record(data, store.uri(key))
        except UnreadableRecord as exc:
            log.warning("left out of the history: %s", exc)
            return None

    with ThreadPoolExecutor(max_workers=_READERS, thread_name_prefix="manifests") as pool:
        records = [r for r in pool.map(read, keys) if r is not None]
    return sorted(records, key=lambda r: r.completed_at or datetime.min, reverse=True)


class RunListing(BaseModel):
    """One line of `compare-models runs`."""

    run_id: str
    status: str
    completed_at: str | None
    data: str | None
    accuracy: dict[str, float]


def list_runs(store: ArtifactStore) -> list[RunListing]:
    """All runs under runs/, complete (with manifest) or not."""
    runs = []
    for prefix in store.list_prefixes(layout.RUNS):
        run_id = layout.run_id_of(prefix)
        try:
            record = read_record(store, run_id)
        except (RunNotFound, UnreadableRecord) as exc:
            status = "incomplete (no manifest)" if isinstance(exc, RunNotFound) else str(exc)
            runs.append(
                RunListing(run_id=run_id, status=status, completed_at=None, data=None, accuracy={})
            )
            continue
        runs.append(
            RunListing(
                run_id=run_id,
                status="complete",
                completed_at=record.completed_at.isoformat() if record.completed_at else None,
                data=record.dataset.name,
                accuracy={m: v.accuracy for m, v in record.metrics.items()},
            )
        )
    return sorted(runs, key=lambda r: r.run_id)
