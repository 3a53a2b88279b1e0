"""Shared fixtures.

Integration tests run against the real local stack (`compare-models up`: SeaweedFS S3 and
a Prefect server on 127.0.0.1), in a bucket of their own that is emptied and removed at
the end of the session, so a developer's own runs are never touched.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

ROOT = Path(__file__).resolve().parent.parent
REAL_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.fixture(scope="session")
def stack():
    """Start (or reuse) the local services and point this process at a fresh test bucket."""
    from compare_models.local_stack import up
    from compare_models.config import Settings
    from compare_models.store import ArtifactStore

    up()
    settings = Settings()
    bucket = f"cm-test-{secrets.token_hex(4)}"
    env = {
        "COMPARE_MODELS_BUCKET": bucket,
        "AWS_ENDPOINT_URL_S3": settings.s3_endpoint_url,
        "PREFECT_API_URL": settings.prefect_api_url,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    store = ArtifactStore.from_settings(Settings())
    store.ensure_bucket()
    yield store
    store.delete_bucket()
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="session")
def prefect_api(stack):
    """Flows run in this process talk to the local Prefect server (not an ephemeral one)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: os.environ["PREFECT_API_URL"]}):
        yield os.environ["PREFECT_API_URL"]


@pytest.fixture
def settings(stack):
    from compare_models.config import Settings

    return Settings()


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"
