"""The stack's env file (``.env``, or COMPARE_MODELS_ENV_FILE): the local endpoints and, written once
by `up`, fresh random credentials. Git-ignored, mode 600 from its first byte, never printed."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from compare_models.config import project_root
from compare_models.local.ports import local_mlflow_url, local_prefect_api, local_s3_url
from compare_models.local.private_files import write_private

POSTGRES_PASSWORD_VARIABLE = "COMPARE_MODELS_POSTGRES_PASSWORD"


def env_file_path() -> Path:
    """The env file: COMPARE_MODELS_ENV_FILE, default ``.env`` at the project root."""
    return Path(os.environ.get("COMPARE_MODELS_ENV_FILE", project_root() / ".env"))


def local_env_defaults() -> dict[str, str]:
    """Environment that points clients at the local services (unless already set)."""
    return {"AWS_ENDPOINT_URL_S3": local_s3_url(), "PREFECT_API_URL": local_prefect_api()}


#: the env file's Prefect API authentication (`up --auth`): `user:password`
AUTH_VARIABLE = "PREFECT_API_AUTH_STRING"


def ensure_env_file(
    env_file: Path | None = None,
    *,
    postgres: bool = False,
    auth: bool = False,
    mlflow: bool = False,
) -> list[str]:
    """Write the local defaults that are missing from both the environment and .env.

    Fills in the local S3 endpoint, the local Prefect API and, once, fresh random S3
    credentials (the file is git-ignored and mode 600; the values are never printed);
    with `postgres`, also a fresh random password for the local PostgreSQL; with `auth`, a
    fresh random `user:password` for the Prefect API (PREFECT_API_AUTH_STRING); with `mlflow`,
    the local MLflow server as MLFLOW_TRACKING_URI (runs log to it from then on).
    Returns the names it added.
    """
    env_file = env_file or env_file_path()
    text = env_file.read_text() if env_file.exists() else ""
    present = {
        line.split("=", 1)[0].strip()
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    wanted = {
        **local_env_defaults(),
        "AWS_ACCESS_KEY_ID": f"cm{secrets.token_hex(8)}",
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        **({POSTGRES_PASSWORD_VARIABLE: secrets.token_urlsafe(30)} if postgres else {}),
        **({AUTH_VARIABLE: f"compare-models:{secrets.token_urlsafe(30)}"} if auth else {}),
        **({"MLFLOW_TRACKING_URI": local_mlflow_url()} if mlflow else {}),
    }
    if os.environ.get("AWS_ENDPOINT_URL"):
        wanted.pop("AWS_ENDPOINT_URL_S3")
    missing = {k: v for k, v in wanted.items() if k not in present and not os.environ.get(k)}
    if missing:
        header = (
            "# written by `compare-models up` for the local services (git-ignored; never commit)\n"
        )
        body = "".join(f"{k}={v}\n" for k, v in missing.items())
        _write_env_file(
            env_file, text + ("" if not text or text.endswith("\n") else "\n") + header + body
        )
    return sorted(missing)


def _write_env_file(env_file: Path, text: str) -> None:
    """Write `.env` with mode 600 from its first byte: a new file is created 600 (O_EXCL), an existing
    one is replaced atomically by a 600 temporary file, so the secrets are never readable by others."""
    if not env_file.exists():
        try:
            write_private(env_file, text.encode())
            return
        except FileExistsError:
            pass  # created meanwhile: replace it as below
    tmp = env_file.with_name(f".{env_file.name}.{secrets.token_hex(6)}.tmp")
    try:
        write_private(tmp, text.encode())
        os.replace(tmp, env_file)
    finally:
        tmp.unlink(missing_ok=True)


def stack_environment(home: Path, ports: dict[str, int]) -> dict[str, str]:
    """The variables that point a process at a local stack of its own: its home (data, logs,
    env file, Prefect client folder) and its ports (`COMPARE_MODELS_S3_PORT`,
    `COMPARE_MODELS_PREFECT_PORT`, `COMPARE_MODELS_POSTGRES_PORT`), for a stack beside the
    user's (a benchmark's, a test's)."""
    return {
        "COMPARE_MODELS_HOME": str(home),
        "COMPARE_MODELS_ENV_FILE": str(home / "stack.env"),
        **{name: str(port) for name, port in ports.items()},
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{ports['COMPARE_MODELS_S3_PORT']}",
        "PREFECT_API_URL": f"http://127.0.0.1:{ports['COMPARE_MODELS_PREFECT_PORT']}/api",
        "PREFECT_HOME": str(home / "prefect-client"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
