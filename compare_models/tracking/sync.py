"""The whole of a run in MLflow: `log_run` (the parent flow's last step before the report) and
`sync` (`compare-models mlflow sync`), each the run's MLflow runs (`runs.ensure_logged`) and
then the registry following its champions (`registry.follow`)."""

from __future__ import annotations

from compare_models.runs.decision import FIRST, PROMOTED
from compare_models.runs.record import RunRecord
from compare_models.storage import layout
from compare_models.storage.errors import StoreError
from compare_models.storage.store import ArtifactStore
from compare_models.tracking.records import Tracked
from compare_models.tracking.registry import follow
from compare_models.tracking.runs import ensure_logged
from compare_models.tracking.sink import Sink


def log_run(
    sink: Sink,
    store: ArtifactStore,
    record: RunRecord,
    *,
    by: str = "run",
    models: list[str] | None = None,
) -> Tracked:
    """`ensure_logged`, then the registry follows the champion records of `models` on the run's
    track (`registry.follow`; default: the models this run made champions): the parent flow's
    last step before the report, and `sync`."""
    tracked = ensure_logged(sink, store, record, by=by)
    promoted = [m for m, d in record.gate.items() if d.decision in (FIRST, PROMOTED)]
    known = {record.run_id: tracked.run_id} if tracked.run_id else {}
    registered: dict[str, int] = {}
    for model in promoted if models is None else models:
        version = follow(sink, store, record.track, model, known)
        if version is not None and model in promoted:
            registered[model] = version
    return tracked.model_copy(update={"registered": registered, "not_logged": list(sink.problems)})


#: `mlflow.json` is a few KiB; far more was not written by compare-models.
MAX_SYNC_BYTES = 1 << 20


def synced(store: ArtifactStore, run_id: str) -> Tracked | None:
    """What `sync` last logged of the run (its `mlflow.json`), None when it never ran; a file that
    is not one is named, never guessed at."""
    from pydantic import ValidationError

    key = layout.mlflow_sync_key(run_id)
    data = store.get_bytes_if_exists(key, max_bytes=MAX_SYNC_BYTES)
    if data is None:
        return None
    try:
        return Tracked.model_validate_json(data)
    except ValidationError as exc:
        raise StoreError(f"{store.uri(key)} is not a record of an MLflow sync: {exc}") from None


def latest(store: ArtifactStore, record: RunRecord) -> Tracked | None:
    """What MLflow holds of the run as last known: the last sync's, else the run's own."""
    return synced(store, record.run_id) or record.mlflow


def sync(sink: Sink, store: ArtifactStore, record: RunRecord) -> Tracked:
    """Logs what MLflow lacks of a completed run (idempotent: a second sync changes nothing) and
    writes what it holds now to the run's `mlflow.json` (the manifest is written once)."""
    tracked = log_run(sink, store, record, by="sync", models=sorted(record.models))
    store.put_json(
        tracked.model_dump(mode="json"), layout.mlflow_sync_key(record.run_id), overwrite=True
    )
    return tracked
