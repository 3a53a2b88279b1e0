"""The settings, the store and the run's catalog each task opens (tasks pass records and
keys, never clients)."""

from __future__ import annotations

from compare_models.config import Settings
from compare_models.runs.artifacts import RunArtifacts
from compare_models.runs.record import RunRecord
from compare_models.storage.store import ArtifactStore


def open_store(outage_minutes: float = 0) -> tuple[Settings, ArtifactStore]:
    """The settings and the store, waiting out an outage of up to `outage_minutes` (a run's
    `execution.store_outage_minutes`; 0: fail at once)."""
    settings = Settings()
    return settings, ArtifactStore.from_settings(settings, outage_minutes=outage_minutes)


def open_artifacts(record: RunRecord) -> tuple[Settings, RunArtifacts]:
    """This process's catalog of the run's files (shared by its tasks: loads happen once),
    waiting out a store outage of up to the run's `execution.store_outage_minutes`."""
    settings, store = open_store(record.params.execution.store_outage_minutes)
    return settings, RunArtifacts.of(store, record.run_id, record.dataset, settings.cache_dir)
