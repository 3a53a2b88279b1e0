"""The local MLflow tracking server (`compare-models up --mlflow`): `mlflow server` on
127.0.0.1:5000 (COMPARE_MODELS_MLFLOW_PORT), its backend store SQLite
(``$COMPARE_MODELS_HOME/mlflow/mlflow.db``) or, with `--database postgres`, the database
``mlflow`` of the local PostgreSQL; its artifacts proxied (`--serve-artifacts`) into the project's
bucket on the local S3 under ``mlflow/``, so no artifact lives only on disk.

The backend store's URI (with PostgreSQL's password) and the S3 keys reach it through its
environment, never its command line (which `ps` shows). MLflow's usage telemetry is off."""

from __future__ import annotations

import importlib.util
import sys

import httpx

from compare_models.config import Settings
from compare_models.local.ports import local_mlflow_url, local_s3_url, mlflow_port
from compare_models.local.postgres import MLFLOW_DB, current_database, database_url
from compare_models.local.private_files import private_dir
from compare_models.local.processes import Service, ServiceError

#: Where the bucket keeps MLflow's artifacts (registered champions' MLflow models).
ARTIFACTS_PREFIX = "mlflow"


def _command(settings: Settings) -> list[str]:
    if importlib.util.find_spec("mlflow.server") is None:
        raise ServiceError(
            "the MLflow server is not installed: pip install -e '.[mlflow-server]' "
            "(`make install` installs it with the test tools)"
        )
    return [
        sys.executable, "-m", "mlflow", "server",
        "--host", "127.0.0.1",
        "--port", str(mlflow_port()),
        "--artifacts-destination", f"s3://{settings.bucket}/{ARTIFACTS_PREFIX}",
        "--serve-artifacts",
        "--workers", "1",
    ]  # fmt: skip


def backend_store_uri(settings: Settings) -> str:
    if current_database(settings) == "postgres":
        return database_url("psycopg2", MLFLOW_DB)
    return f"sqlite:///{private_dir(settings.home / 'mlflow') / 'mlflow.db'}"


def _env(settings: Settings) -> dict[str, str]:
    if not (settings.aws_access_key_id and settings.aws_secret_access_key):
        raise ServiceError(
            "no S3 credentials for MLflow's artifacts: run `compare-models up` first"
        )
    return {
        "MLFLOW_BACKEND_STORE_URI": backend_store_uri(settings),
        "MLFLOW_S3_ENDPOINT_URL": settings.s3_endpoint_url or local_s3_url(),
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key.get_secret_value(),
        "AWS_DEFAULT_REGION": settings.aws_region,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        # MLflow 3's job runner (GenAI evaluation jobs, which compare-models never submits) starts
        # eight resident worker processes (their memory: docs/benchmarks.md, "The MLflow sink"):
        # not on a 2-core laptop
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
    }


def _healthy(settings: Settings) -> bool:
    try:
        return httpx.get(local_mlflow_url() + "/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


MLFLOW = Service("mlflow", _command, _env, _healthy, local_mlflow_url, 120)
