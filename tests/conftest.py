"""Shared fixtures.

Integration tests run against a real local stack of their own (`tests/stack.py`: SeaweedFS S3
and a Prefect server on 127.0.0.1, on other ports and in another folder than the user's
`compare-models up`), in a bucket of their own that is emptied and removed at the end of the
session: a developer's own runs, flow runs, deployments and workers are never touched.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests import stack as test_stack

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
test_stack.apply()  # before anything imports Prefect (its settings read the environment at import)

ROOT = Path(__file__).resolve().parent.parent
REAL_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


# ── the command line, run as a user would ────────────────────────────────────


def cli_command(*args: str) -> list[str]:
    """The argv of `compare-models ARGS` with this interpreter (`python -m compare_models.cli.main`)."""
    return [sys.executable, "-m", "compare_models.cli.main", *args]


def cli(
    *args: str, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run `compare-models ARGS` from the project root, output captured as text; `env` replaces
    the whole environment (default: this process's, as it is now)."""
    return subprocess.run(
        cli_command(*args), cwd=ROOT, capture_output=True, text=True, env=env, timeout=timeout
    )


def smoke_run_args(
    data: str, models: str, sizes: tuple[int, int, int], epochs: int, *extra: str
) -> list[str]:
    """The arguments of `compare-models run --preset smoke` on a `sizes` split of (train, val,
    test) images, then `extra`, then `--json`."""
    train, val, test = sizes
    return [
        "run",
        "--preset",
        "smoke",
        "--data",
        data,
        "--models",
        models,
        "--split",
        "sizes",
        "--train-size",
        str(train),
        "--val-size",
        str(val),
        "--test-size",
        str(test),
        "--epochs",
        str(epochs),
        *extra,
        "--json",
    ]


def training_result(run_id: str, model: str, replica: int = 0, **changes):
    """A `TrainingResult` made by hand, with this run's keys for the replica's name."""
    from compare_models.storage import layout
    from compare_models.training.jobs import TrainingResult

    name = layout.training_name(model, replica)
    return TrainingResult(
        **{
            "model": model,
            "replica": replica,
            "model_key": layout.model_key(run_id, name),
            "history_key": layout.history_key(run_id, name),
            "predictions_key": layout.predictions_key(run_id, name),
            "epochs": 1,
            "resumed_from_epoch": 0,
            "fit_seconds": 1.0,
            "fit_started_at": 0.0,
            "train_images_per_second": 1.0,
            "parameters": 1,
            "peak_rss_mb": 1.0,
            "device": {},
            **changes,
        }
    )


def placeholder_dataset(source: str = "synthetic:1"):
    """A DatasetRef naming no real data (synthetic, no files): for a training job that must be
    refused or never start, or one that is only planned."""
    from compare_models.data.dataset import DatasetRef

    return DatasetRef(
        name="x",
        synthetic=True,
        source=source,
        archive_sha256=None,
        prefix="datasets/x/",
        class_names=[str(i) for i in range(10)],
        sizes={},
        files={},
        normalisation={},
    )


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
