"""The settings, the store and the run's catalog each task opens (tasks pass records and
keys, never clients)."""

from __future__ import annotations

from compare_models.artifacts import RunArtifacts
from compare_models.config import Settings
from compare_models.run_record import RunRecord
from compare_models.store import ArtifactStore


def open_store() -> tuple[Settings, ArtifactStore]:
    settings = Settings()
    return settings, ArtifactStore.from_settings(settings)


def open_artifacts(record: RunRecord) -> tuple[Settings, RunArtifacts]:
    """This process's catalog of the run's files (shared by its tasks: loads happen once)."""
    settings, store = open_store()
    return settings, RunArtifacts.of(store, record.run_id, record.dataset, settings.cache_dir)
