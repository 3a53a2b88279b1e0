"""Shared fixtures.

Integration tests run against a real local stack of their own (`tests/support/stack.py`: SeaweedFS S3
and a Prefect server on 127.0.0.1, on other ports and in another folder than the user's
`compare-models up`), in a bucket of their own that is emptied and removed at the end of the
session: a developer's own runs, flow runs, deployments and workers are never touched.
"""

from __future__ import annotations

import os
import secrets
import sys

import pytest

from tests.support import stack as test_stack

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
test_stack.apply()  # before anything imports Prefect (its settings read the environment at import)

from tests.support.runs import ROOT  # noqa: E402  (after the stack's environment)

# ── the local services ───────────────────────────────────────────────────────


@pytest.fixture(scope="session")
def stack():
    """Start (or reuse) the test stack and point this process at a fresh test bucket."""
    from compare_models.config import Settings
    from compare_models.storage.store import ArtifactStore

    test_stack.up()
    # the endpoints are the test stack's already (test_stack.apply); the bucket is this session's
    env = {"COMPARE_MODELS_BUCKET": f"cm-test-{secrets.token_hex(4)}"}
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


@pytest.fixture(scope="session")
def plugin_models(tmp_path_factory):
    """Installs tests/plugin_models as a user's package would: a distribution whose
    `compare_models.models` entry point names the `tiny` model. The dist-info folder goes
    on sys.path (this process) and PYTHONPATH (the training subprocesses and CLI runs)."""
    site = tmp_path_factory.mktemp("plugin-site")
    info = site / "compare_models_test_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: compare-models-test-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[compare_models.models]\ntiny = tests.plugin_models.specs:TINY\n"
    )
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), str(ROOT), saved) if p)
    sys.path.insert(0, str(site))
    yield "tiny"
    sys.path.remove(str(site))
    if saved is None:
        os.environ.pop("PYTHONPATH", None)
    else:
        os.environ["PYTHONPATH"] = saved
