"""What the CLI's command modules share: the error line (and its exit code) and the store of
the settings."""

from __future__ import annotations

from compare_models.cli.console import print_error
from compare_models.config import Settings


def fail(message: str, code: int = 1) -> int:
    print_error(message)
    return code


def open_store():
    from compare_models.storage.store import ArtifactStore

    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    store.check()
    return settings, store
