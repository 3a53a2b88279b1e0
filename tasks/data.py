"""Tasks that run before any training: preflight and the data stage."""

from __future__ import annotations

import uuid

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from compare_models.config import RunParams
from compare_models.data.dataset import DatasetRef, prepare_dataset, prepare_folder
from compare_models.data.folders import is_folder_source
from compare_models.gate.data_changes import data_changes
from compare_models.gate.data_changes import markdown as data_changes_markdown
from compare_models.gate.unchanged_data import skipped_run
from compare_models.models import registry
from compare_models.models.weights import resolve_resnet_weights
from compare_models.runs.claim import claim_run, guard_run_prefix
from compare_models.runs.record import DataChanges, RunRecord, SkippedRun
from compare_models.storage import layout
from tasks._store import open_artifacts, open_store
from tasks.child_runs import flow_run_alive


@task(name="preflight")
def preflight(params: RunParams, run_id: str) -> str | None:
    """Everything that can fail cheaply fails here, before data or training work: the
    store (endpoint, credentials, bucket), the run prefix, and the backbone weights
    (returns their S3 key when a selected model takes weights)."""
    settings, store = open_store()
    store.check()  # at once: a typo in the endpoint is not an outage to wait out
    store = store.waiting_out(params.execution.store_outage_minutes)
    guard_run_prefix(store, run_id)
    owner = str(flow_run.id) if flow_run.id else f"local-{uuid.uuid4()}"
    get_run_logger().info(
        "run %s: %s", run_id, claim_run(store, run_id, owner, owner_alive=flow_run_alive)
    )
    if any(registry.get(m).takes_weights for m in params.models):
        return resolve_resnet_weights(params.resnet_weights, store, settings.cache_dir, settings)
    return None


@task(name="prepare-data", retries=1, retry_delay_seconds=5, retry_jitter_factor=0.5)
def prepare_data(params: RunParams) -> DatasetRef:
    """Fetch → verify → decode → normalise → split, stored in S3 once per content and split."""
    settings, store = open_store(params.execution.store_outage_minutes)
    logger = get_run_logger()
    if is_folder_source(params.data):
        ref, snap = prepare_folder(
            params.data, params.split, params.folder, store, settings.cache_dir
        )
        if snap is not None:
            logger.info(
                "dataset version %s of %s: %d files listed, %d read, %d decoded%s (%.1f s)",
                snap.version.version_id[:12],
                snap.version.summary.source,
                snap.listed,
                snap.downloaded,
                snap.decoded,
                "" if snap.stored else ", the same version as before",
                snap.seconds,
            )
        if ref.skipped:
            logger.warning(
                "%d file(s) skipped (`compare-models dataset %s` lists each with its reason)",
                ref.skipped,
                ref.version_id[:12],
            )
    else:
        ref = prepare_dataset(
            params.data,
            params.split,
            store,
            settings.cache_dir,
            expected_sha256=params.data_sha256,
            allow_private_urls=settings.allow_private_urls,
        )
    logger.info(
        "data %s%s: %s, %s (%.1f s)",
        ref.name,
        " [SYNTHETIC]" if ref.synthetic else "",
        ref.sizes,
        "reused from the store" if ref.reused else "prepared and stored",
        ref.seconds,
    )
    return ref


@task(name="skip-if-unchanged")
def skip_unchanged(params: RunParams, run_id: str, dataset: DatasetRef) -> SkippedRun | None:
    """With `skip_if_unchanged`: a run whose data is the champions' version stops here, says so
    (log and artifact) and leaves nothing in its prefix (its claim is withdrawn)."""
    _, store = open_store(params.execution.store_outage_minutes)
    skipped = skipped_run(store, params, run_id, dataset)
    if skipped is not None:
        get_run_logger().info("run %s %s", run_id, skipped.reason)
        create_markdown_artifact(
            f"# Run {run_id} skipped\n\n{skipped.reason}\n",
            key="compare-models-skipped",
            description=f"Run {run_id}: the data has not changed",
        )
        store.delete(layout.claim_key(run_id))
    return skipped


@task(name="describe-data")
def describe_data(record: RunRecord) -> DataChanges | None:
    """For a folder source, what changed in the data since the champion's version (read before
    the gate may change it) and the previous run's; shown as an artifact and in the report."""
    _, artifacts = open_artifacts(record)
    changes = data_changes(artifacts.store, record, artifacts.completed_runs())
    if changes is not None:
        create_markdown_artifact(
            data_changes_markdown(changes),
            key="compare-models-data",
            description=f"Run {record.run_id}: what changed in the data",
        )
    return changes
