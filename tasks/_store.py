"""The settings and the store each task opens (tasks pass keys, never clients)."""

from __future__ import annotations

from compare_models.config import Settings
from compare_models.store import ArtifactStore


def open_store() -> tuple[Settings, ArtifactStore]:
    settings = Settings()
    return settings, ArtifactStore.from_settings(settings)
