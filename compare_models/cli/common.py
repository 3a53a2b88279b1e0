"""What the CLI's command modules share: the error line (and its exit code), the store of the
settings, and the settings Prefect reads from the environment."""

from __future__ import annotations

import os

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


def export_settings(settings: Settings) -> None:
    """Prefect reads PREFECT_API_URL from the environment; .env may hold it for the local stack."""
    if settings.prefect_api_url and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_API_URL"] = settings.prefect_api_url
    if settings.prefect_api_auth_string and not os.environ.get("PREFECT_API_AUTH_STRING"):
        os.environ["PREFECT_API_AUTH_STRING"] = settings.prefect_api_auth_string.get_secret_value()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
