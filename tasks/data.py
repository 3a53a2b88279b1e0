"""Tasks that run before any training: preflight and the data stage."""

from __future__ import annotations

import uuid

from prefect import get_run_logger, task
from prefect.runtime import flow_run

from compare_models import registry
from compare_models.config import RunParams
from compare_models.data.dataset import DatasetRef, prepare_dataset
from compare_models.run_claim import claim_run, guard_run_prefix
from compare_models.weights import resolve_resnet_weights
from tasks._store import open_store
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
    ref = prepare_dataset(
        params.data,
        params.split,
        store,
        settings.cache_dir,
        expected_sha256=params.data_sha256,
        allow_private_urls=settings.allow_private_urls,
    )
    get_run_logger().info(
        "data %s%s: %s, %s (%.1f s)",
        ref.name,
        " [SYNTHETIC]" if ref.synthetic else "",
        ref.sizes,
        "reused from the store" if ref.reused else "prepared and stored",
        ref.seconds,
    )
    return ref
